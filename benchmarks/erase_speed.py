"""Wall time and peak memory of ``erase`` on an SD-1.4-sized pipeline (random weights, fp32, CPU), against UCE's
published reference code on the same machine class (1.1 / 1.9 / 14.3 s at 1 / 10 / 100 concepts, 2 threads).

    .venv/bin/python benchmarks/erase_speed.py [--concepts 1 10 100] [--repeats 2] [--threads 2] [--quick]
    .venv/bin/python benchmarks/erase_speed.py --family flux --t5 xl [--max-sequence-length 512] [--device cuda]

``--family flux`` measures FLUX.1's text path instead (:func:`erasepro_core.tiny.flux_text_path_pipeline`: CLIP
ViT-L/14 + a T5 v1.1 encoder of the size ``--t5`` names — FLUX.1's is xxl, ~19 GB in fp32 — + the transformer's
two text sites); T5 runs on whole prompts at ``--max-sequence-length`` (the pipeline pads to it and T5 sees the
padding), which dominates its cost. The UCE reference applies to the SD model only.

One run reports, per method (UCE, ErasePro default ``schedule="none"``, ErasePro progressive ``"front"``) and
concept count:
  * first-ever cold — a fresh process and no preserve statistics anywhere (empty ``ERASEPRO_STATS_DIR``);
  * cold — a fresh process, statistics on disk (what a restarted or new worker pays on its first job);
  * warm — the median of later jobs in the same process.
Every measurement runs in a child process (``--child``); building the pipeline is excluded. Machine load
(``/proc/loadavg``) is printed at start and end: on a shared machine the numbers are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "van gogh,monet,picasso,rembrandt,dali,warhol,klimt,munch,vermeer,matisse,cezanne,renoir,degas,goya,turner,"
    "hokusai,kahlo,pollock,rothko,magritte,snoopy,mickey mouse,pikachu,mario,batman,superman,spiderman,elsa,"
    "shrek,yoda,nudity,violence,blood,gore,weapon,gun,knife,cigarette,alcohol,drugs,coca cola,pepsi,nike,adidas,"
    "apple logo,starbucks,mcdonalds,ferrari,lego,barbie,eiffel tower,statue of liberty,big ben,colosseum,"
    "taj mahal,golden gate bridge,mount fuji,sydney opera house,pyramids,stonehenge,tiger,lion,elephant,giraffe,"
    "zebra,panda,koala,kangaroo,penguin,dolphin,shark,whale,eagle,owl,parrot,flamingo,peacock,butterfly,spider,"
    "snake,crocodile,dinosaur,dragon,unicorn,mermaid,vampire,zombie,ghost,witch,wizard,knight,pirate,ninja,"
    "samurai,cowboy,astronaut,robot,alien,clown,angel"
).split(",")
ANCHORS = ("art", "", "a person", "an object", "a landscape")
REFERENCE_S = {1: 1.1, 10: 1.9, 100: 14.3}  # UCE's own code, SD-1.4, CPU, 2 threads (docs/benchmarks.md)
# "UCE" is the authors' current script's protocol (uce2025, bare concepts, no generic set); "UCE custom" the
# baseline's inputs before issue 28 (ErasePro's templates and generic preserve set), the rows docs/benchmarks.md
# measured before then.
METHODS = {"UCE": {"method": "uce"}, "UCE 2023": {"method": "uce", "uce_protocol": "uce2023"},
           "UCE custom": {"method": "uce", "uce_protocol": "custom"},
           "ErasePro default": {}, "ErasePro progressive": {"schedule": "front"}}


def _peak_rss_during(fn):
    """Run fn(); return (result, peak RSS increase in MB) sampled from /proc every 5 ms."""
    from erasepro_core.cost import peak_rss_during

    out, peak = peak_rss_during(fn)
    return out, peak / 2**20


def build(model: str, device: str):
    """``sd`` or ``flux:<t5 size>:<max sequence length>``, on ``device``."""
    from erasepro_core.tiny import flux_text_path_pipeline, sd14_sized_pipeline

    if model == "sd":
        return sd14_sized_pipeline().to(device)
    _, t5, length = model.split(":")
    return flux_text_path_pipeline(t5, int(length)).to(device)


def child(method: str, n: int, repeats: int, threads: int, model: str = "sd", device: str = "cpu") -> dict:
    """In a fresh process: the first erase (cold), then ``repeats`` more (warm)."""
    import torch

    from erasepro_core import ErasureSpec, erase
    from erasepro_core.pipeline import quiet_libraries

    torch.set_num_threads(threads)
    quiet_libraries()
    pipe = build(model, device)
    edits = [{"target": WORDS[i], "anchor": ANCHORS[i % len(ANCHORS)]} for i in range(n)]
    spec = ErasureSpec.model_validate({"edits": edits, **METHODS[method]})
    t = time.perf_counter()
    res, mem = _peak_rss_during(lambda: erase(pipe, spec))
    cold, mems, warm = time.perf_counter() - t, [mem], []
    for _ in range(repeats):
        t = time.perf_counter()
        res, mem = _peak_rss_during(lambda: erase(pipe, spec))  # noqa: B023
        warm.append(time.perf_counter() - t)
        mems.append(mem)
    s = res.report["summary"]
    # peak_mb: the whole child (the cold first job dominates: one-time library buffers, loading statistics);
    # warm_peak_mb: what each later job adds on top of the RSS it started from (a long-lived worker's cost)
    return {"cold": cold, "warm": statistics.median(warm) if warm else None, "peak_mb": max(mems),
            "warm_peak_mb": max(mems[1:]) if warm else None,
            "kv_residual": s["kv_residual"], "stages": res.report["timings"]}


def _run_child(method: str, n: int, repeats: int, threads: int, stats_dir: str, model: str = "sd",
               device: str = "cpu") -> dict:
    env = {**os.environ, "ERASEPRO_STATS_DIR": stats_dir, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, __file__, "--child", method, str(n), str(repeats), str(threads), model, device]
    # A T5-xl FLUX text path at 512 tokens takes hours on 2 CPU cores: no limit there.
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800 if model == "sd" else None)
    if out.returncode != 0:
        raise RuntimeError(f"{method} at {n}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concepts", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--quick", action="store_true", help="1 and 10 concepts, one warm repeat (a sanity run)")
    ap.add_argument("--family", choices=["sd", "flux"], default="sd")
    ap.add_argument("--t5", choices=["small", "base", "large", "xl", "xxl"], default="xl",
                    help="T5 v1.1 size for --family flux (FLUX.1's own is xxl)")
    ap.add_argument("--max-sequence-length", type=int, default=512, help="T5 length for --family flux")
    ap.add_argument("--device", default="cpu", help="cpu (the published tables) or cuda")
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        m, n, r, th, model, device = args.child
        print(json.dumps(child(m, int(n), int(r), int(th), model, device)))
        return
    if args.quick:
        args.concepts, args.repeats = [1, 10], 1
    model = "sd" if args.family == "sd" else f"flux:{args.t5}:{args.max_sequence_length}"
    what = ("SD-1.4-sized pipeline" if model == "sd" else
            f"FLUX.1 text path (CLIP-L + T5-{args.t5} at {args.max_sequence_length} tokens)")
    print(f"{what} (random weights), fp32, {args.device}, {args.threads} threads; load average {_load()}",
          flush=True)
    run = lambda method, n, repeats, stats: _run_child(  # noqa: E731
        method, n, repeats, args.threads, stats, model, args.device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="erasepro-bench-") as tmp:
        shared = str(Path(tmp) / "stats")  # statistics on disk, as a warmed machine has them
        for method in args.methods:
            first = run(method, min(args.concepts), 0, str(Path(tmp) / f"fresh-{len(rows)}"))
            print(f"  {method:21s} first-ever cold at {min(args.concepts)} concept(s): {first['cold']:.2f}s",
                  flush=True)
            run(method, 1, 0, shared)  # puts this method's statistics on disk
            for n in args.concepts:
                r = run(method, n, args.repeats, shared)
                r.update(method=method, n=n, first=first["cold"] if n == min(args.concepts) else None)
                rows.append(r)
                print(f"  {method:21s} {n:4d} concepts: cold {r['cold']:.2f}s, warm {r['warm']:.2f}s, "
                      f"stages {r['stages']}", flush=True)
    print(f"\nload average at the end {_load()}\n")
    print("| concepts | method | first-ever cold (s) | cold, stats on disk (s) | warm median (s) | reference UCE (s) "
          "| cold / ref | warm / ref | peak extra RSS, first job (MB) | peak extra RSS, warm job (MB) | K/V residual |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r["n"], list(METHODS).index(r["method"]))):
        ref = REFERENCE_S.get(r["n"]) if model == "sd" else None  # UCE's reference was measured on SD
        first = f"{r['first']:.2f}" if r["first"] is not None else "-"
        cold_r, warm_r = (f"{r['cold'] / ref:.2f}", f"{r['warm'] / ref:.2f}") if ref else ("-", "-")
        print(f"| {r['n']} | {r['method']} | {first} | {r['cold']:.2f} | {r['warm']:.2f} | {ref or '-'} "
              f"| {cold_r} | {warm_r} | {r['peak_mb']:.0f} | {r['warm_peak_mb'] or 0:.0f} | {r['kv_residual']:.1e} |")


if __name__ == "__main__":
    main()
