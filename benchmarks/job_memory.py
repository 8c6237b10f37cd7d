"""The door's memory estimates (:mod:`erasepro_jobs.memory`) against measured peaks, on the bundled model.

Each case runs once to warm up (preserve statistics, library buffers: what a running worker already holds), then
once measured: the peak resident set above the resident set before the run (``VmHWM`` after resetting it through
``/proc/self/clear_refs``: the kernel's own peak, no sampling). Prints a table and writes
``benchmarks/results/job_memory.json``. ``python benchmarks/job_memory.py [--threads 1]``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from erasepro_jobs import memory
from erasepro_jobs.registry import bundled_info

WORDS = ["red circle", "blue square", "green triangle", "striped star", "dotted cross", "purple ring"]


def _edits(n: int) -> list[dict[str, str]]:
    return [{"target": f"{WORDS[i % len(WORDS)]} {i}", "anchor": "shape"} for i in range(n)]


ERASURES = [
    ("1 edit, defaults", {"edits": _edits(1)}),
    ("20 edits, defaults", {"edits": _edits(20)}),
    ("100 edits, defaults", {"edits": _edits(100)}),
    ("20 edits, to_end", {"edits": _edits(20), "token_policy": "to_end"}),
    ("20 edits, schedule front", {"edits": _edits(20), "schedule": "front"}),
    ("20 edits, 64 preserve, all tokens", {"edits": _edits(20), "preserve": [f"a photo of thing {i}" for i in
                                                                              range(64)], "preserve_tokens": "all"}),
]
GENERATIONS = [(64, 64, 1), (128, 128, 1), (128, 128, 4)]


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def measured(fn) -> int:
    """Peak RSS above the RSS before ``fn()`` (VmHWM reset first)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status("VmRSS:")
    fn()
    return max(0, _status("VmHWM:") - base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    from erasepro_core import ErasureSpec, erase
    from erasepro_core.bundled import bundled_model_path
    from erasepro_core.pipeline import generate, load_pipeline
    from erasepro_core.preserve import FeatureCache

    torch.set_num_threads(args.threads)
    info = bundled_info()
    pipe = load_pipeline(bundled_model_path(), device="cpu")
    rows = []
    for name, body in ERASURES:
        spec = ErasureSpec.model_validate(body)
        cache = FeatureCache(store=None)
        t0 = time.perf_counter()
        erase(pipe, spec, cache=cache)  # warm-up
        peak = measured(lambda spec=spec, cache=cache: erase(pipe, spec, cache=cache))
        rows.append({"job": "erasure", "case": name, "estimate": memory.erasure_bytes(spec, info), "peak": peak,
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)
    for w, h, n in GENERATIONS:
        generate(pipe, "a red circle", steps=2, width=w, height=h, num_images=n)
        peak = measured(lambda w=w, h=h, n=n: generate(pipe, "a red circle", steps=2, width=w, height=h,
                                                       num_images=n))
        rows.append({"job": "generation", "case": f"{w}x{h} x{n}",
                     "estimate": memory.generation_bytes(info, w, h, n), "peak": peak})
        print(rows[-1], flush=True)
    print("\n| job | case | measured peak (MB) | estimate (MB) | estimate / peak |\n|---|---|---|---|---|")
    for r in rows:
        ratio = r["estimate"] / r["peak"] if r["peak"] else float("inf")
        print(f"| {r['job']} | {r['case']} | {r['peak'] / 2**20:.1f} | {r['estimate'] / 2**20:.1f} | {ratio:.1f} |")
    out = Path(__file__).parent / "results" / "job_memory.json"
    out.write_text(json.dumps({"threads": args.threads, "model": "bundled", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
