"""How ``erase`` scales with the constrained columns: concepts × token policies on SD-1.4- and SDXL-sized text
paths (random weights, fp32, CPU): wall time, peak memory above the pipeline, residual, and the memory the
torch-free estimate (:func:`erasepro_core.cost.erase_memory`) predicted.

    .venv/bin/python benchmarks/solver_scale.py [--family sd sdxl] [--concepts 1 10 100 1000]
        [--policies last to_eos to_end] [--threads 1] [--timeout 1800] [--out benchmarks/results/solver_scale.json]

Every point runs in a fresh child process: it builds the pipeline, runs a one-concept warm-up job (library
buffers, the generic preserve statistics, the template prefix states: what a running worker already holds), then
measures one job. "Peak above the pipeline" is the child's peak RSS during that job minus its RSS before it
(sampled every 5 ms from /proc). The SD-1.4-sized pipeline is the full one (:func:`erasepro_core.tiny
.sd14_sized_pipeline`); the SDXL-sized one is its text path only: both CLIP towers (ViT-L/14 and bigG/14) at full
size and the UNet's 140 cross-attention K/V projections (2048 → 640/1280) on a module that holds nothing else
(SDXL's full UNet is 10 GB in fp32; erase reads only those). UCE's own code was measured on SD-1.4 at the
``last`` policy only (docs/benchmarks.md): the ratio is given there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from erase_speed import ANCHORS, WORDS  # noqa: E402

from erasepro_core.cost import peak_rss_during  # noqa: E402

# UCE's own code, SD-1.4, CPU, 2 threads, its `last`-token protocol (docs/benchmarks.md; 1000: issue 29).
UCE_REFERENCE_S = {1: 1.1, 10: 1.9, 100: 14.3, 1000: 104.0}


def concepts(n: int) -> list[dict[str, str]]:
    """n distinct targets: the benchmark words, then numbered variants of them ("van gogh 2", …)."""
    out = []
    for i in range(n):
        word = WORDS[i % len(WORDS)]
        out.append({"target": word if i < len(WORDS) else f"{word} {i // len(WORDS) + 1}",
                    "anchor": ANCHORS[i % len(ANCHORS)]})
    return out


def sdxl_text_path():
    """SDXL's two CLIP text towers at full size and its UNet's cross-attention K/V maps, nothing else."""
    import torch
    from torch import nn
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from erasepro_core.tiny import _text_config
    from erasepro_core.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    te1 = CLIPTextModel(_text_config(768, 12, 12, 77)).eval()
    te2 = CLIPTextModelWithProjection(_text_config(1280, 32, 20, 77, projection_dim=1280)).eval()
    unet = nn.Module()
    # SDXL's transformer blocks: down 1 (640 wide, 2 × 2), down 2 (1280, 2 × 10), mid (1280, 10), up 0 (1280,
    # 3 × 10), up 1 (640, 3 × 2): 70 blocks, each with to_k and to_v reading the 2048-wide context.
    layout = [("down_blocks.1", 2, 2, 640), ("down_blocks.2", 2, 10, 1280), ("mid_block", 1, 10, 1280),
              ("up_blocks.0", 3, 10, 1280), ("up_blocks.1", 3, 2, 640)]
    for block, n_attn, depth, width in layout:
        for a in range(n_attn):
            for b in range(depth):
                for kv in ("to_k", "to_v"):
                    name = f"{block}.attentions.{a}.transformer_blocks.{b}.attn2.{kv}"
                    parent = unet
                    for part in name.split(".")[:-1]:
                        if not hasattr(parent, part):
                            parent.add_module(part, nn.Module())
                        parent = getattr(parent, part)
                    parent.add_module(kv, nn.Linear(2048, width, bias=False))
    holder = type("StableDiffusionXLPipeline", (), {})()  # the adapter registry matches the class by name
    holder.text_encoder, holder.text_encoder_2, holder.unet = te1, te2, unet
    holder.tokenizer = holder.tokenizer_2 = clip_tokenizer(77)
    holder.name_or_path = ""
    return holder


def build(family: str):
    from erasepro_core.tiny import sd14_sized_pipeline

    return sd14_sized_pipeline() if family == "sd" else sdxl_text_path()


def child(family: str, n: int, policy: str, threads: int) -> dict:
    import torch

    from erasepro_core import ErasureSpec, erase
    from erasepro_core.cost import erase_memory, model_dims
    from erasepro_core.pipeline import quiet_libraries

    torch.set_num_threads(threads)
    quiet_libraries()
    pipe = build(family)
    erase(pipe, {"edits": concepts(1)})  # warm-up: library buffers, preserve statistics, prefix states
    spec = ErasureSpec.model_validate({"edits": concepts(n), "token_policy": policy})
    t, cpu = time.perf_counter(), time.process_time()
    res, peak = peak_rss_during(lambda: erase(pipe, spec))
    # CPU time too: on a shared machine a niced process's wall time follows the other jobs' load (measured: the
    # same 100-concept to_end point took 155 s once and over 1,800 s later), its CPU time much less so.
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    s = res.report["summary"]
    estimate = erase_memory(spec.model_dump(mode="json"), model_dims(family + "-sized"))
    return {"family": family, "concepts": n, "policy": policy, "columns": res.report["n_constraints"],
            "time_s": round(elapsed, 2), "cpu_s": round(cpu, 2), "peak_above_pipeline_mb": round(peak / 2**20),
            "estimate_mb": round(estimate.total / 2**20), "kv_residual": s["kv_residual"],
            "max_residual": s["max_residual"], "stages": res.report["timings"], "threads": threads,
            "cpus": sorted(os.sched_getaffinity(0))}


def run_child(family: str, n: int, policy: str, threads: int, timeout: float, nice: int = 19) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = ["nice", "-n", str(nice), sys.executable, __file__, "--child", family, str(n), policy, str(threads)]
    t = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"family": family, "concepts": n, "policy": policy, "error": f"over {timeout:.0f} s (not measured)"}
    if out.returncode != 0:
        return {"family": family, "concepts": n, "policy": policy,
                "error": out.stderr.strip().splitlines()[-1][-300:] if out.stderr.strip() else f"rc {out.returncode}",
                "wall_s": round(time.perf_counter() - t)}
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| model | concepts | token policy | columns | time (s) | CPU time (s) | peak above pipeline (MB) "
             "| estimate (MB) | K/V residual | max residual | UCE's code (s) | time (CPU if recorded) / UCE's |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = {"sd": "SD-1.4-sized", "sdxl": "SDXL-sized"}[r["family"]]
        if "error" in r:
            lines.append(f"| {name} | {r['concepts']} | {r['policy']} | | {r['error']} | | | | | | | |")
            continue
        ref = UCE_REFERENCE_S.get(r["concepts"]) if r["family"] == "sd" and r["policy"] == "last" else None
        # CPU time where recorded (the wall time of a point on a shared core follows the other processes)
        ratio = f"{r.get('cpu_s', r['time_s']) / ref:.2f}" if ref else "-"
        lines.append(f"| {name} | {r['concepts']} | {r['policy']} | {r['columns']} | {r['time_s']:.1f} "
                     f"| {r.get('cpu_s', '-')} | {r['peak_above_pipeline_mb']} | {r['estimate_mb']} "
                     f"| {r['kv_residual']:.1e} | {r['max_residual']:.1e} | {ref or '-'} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", nargs="+", default=["sd", "sdxl"], choices=["sd", "sdxl"])
    ap.add_argument("--concepts", type=int, nargs="+", default=[1, 10, 100, 1000])
    ap.add_argument("--policies", nargs="+", default=["last", "to_eos", "to_end"],
                    choices=["last", "to_eos", "to_end"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per point (a point over it is "
                    "reported as not measured)")
    ap.add_argument("--nice", type=int, default=19, help="the points' niceness (19: yield to everything else "
                    "on a shared machine; their CPU time, recorded as cpu_s, does not depend on it)")
    ap.add_argument("--out", type=Path, default=None, help="append the rows to this JSON file")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        family, n, policy, threads = args.child
        print(json.dumps(child(family, int(n), policy, int(threads))))
        return
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"fp32, CPU, {args.threads} thread(s); load average {load}", flush=True)
    rows = []
    old = json.loads(args.out.read_text()) if args.out and args.out.exists() else []
    for family in args.family:
        for policy in args.policies:
            for n in args.concepts:
                r = run_child(family, n, policy, args.threads, args.timeout, args.nice)
                r["load_before"] = load
                rows.append(r)
                print(json.dumps(r), flush=True)
                if args.out:
                    key = lambda x: (x["family"], x["concepts"], x["policy"])  # noqa: E731
                    old = [o for o in old if key(o) != key(r)] + [r]
                    args.out.write_text(json.dumps(old, indent=1) + "\n")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
