"""Wall time and peak memory of ``erase`` on an SD-1.4-sized pipeline (random weights, fp32, CPU).

    .venv/bin/python benchmarks/erase_speed.py [--concepts 1 10 100] [--repeats 3] [--threads 2]

Model build is excluded. The generic preserve statistics are cached per base model, so the first
ErasePro run on a model pays for them ("cold"); the table reports the warm median and the cold time apart.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch

from erasepro_core.erasure import erase
from erasepro_core.pipeline import quiet_libraries
from erasepro_core.preserve import FeatureCache
from erasepro_core.spec import ErasureSpec
from erasepro_core.tiny import sd14_sized_pipeline

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


def _peak_rss_during(fn):
    """Run fn(); return (result, peak RSS increase in MB) sampled from /proc every 5 ms."""
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    base, peak, stop = rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        out = fn()
    finally:
        stop.set()
        t.join()
    return out, max(peak[0] - base, 0) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concepts", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=["uce", "none", "uniform", "front"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    quiet_libraries()
    t = time.perf_counter()
    pipe = sd14_sized_pipeline()
    print(f"SD-1.4-sized pipeline built in {time.perf_counter() - t:.1f}s (excluded); "
          f"{args.threads} threads, fp32, CPU\n")
    rows = []
    for n in args.concepts:
        edits = [{"target": WORDS[i], "anchor": ANCHORS[i % len(ANCHORS)]} for i in range(n)]
        uce_med = None
        for m in args.methods:
            spec = ErasureSpec(edits=edits, method="uce") if m == "uce" else ErasureSpec(edits=edits, schedule=m)
            cache = FeatureCache()
            (res, cold_mem) = _peak_rss_during(lambda: erase(pipe, spec, cache=cache))  # noqa: B023
            cold = res.report["timings"]["total_s"]
            times, mems = [], [cold_mem]
            for _ in range(args.repeats):
                (res, mem) = _peak_rss_during(lambda: erase(pipe, spec, cache=cache))  # noqa: B023
                times.append(res.report["timings"]["total_s"])
                mems.append(mem)
            med = statistics.median(times)
            if m == "uce":
                uce_med = med
            label = "UCE" if m == "uce" else f"ErasePro {m}"
            ratio = med / uce_med if uce_med else float("nan")
            s = res.report["summary"]
            rows.append((n, label, med, cold, max(mems), ratio, s["kv_residual"], s["kv_heldout_residual"]))
            print(f"  {n:4d} concepts  {label:18s} warm {med:6.2f}s  cold {cold:6.2f}s  "
                  f"peak +{max(mems):6.0f} MB  x{ratio:.2f} UCE   stages {res.report['timings']}", flush=True)
    print("\n| concepts | method | warm median (s) | cold (s) | peak extra RSS (MB) | / UCE "
          "| K/V residual | held-out |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n, label, med, cold, mem, ratio, res_, held in rows:
        print(f"| {n} | {label} | {med:.2f} | {cold:.2f} | {mem:.0f} | {ratio:.2f} | {res_:.1e} | {held:.3f} |")


if __name__ == "__main__":
    main()
