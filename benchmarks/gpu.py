"""GPU figures in one short run: ``erase`` at 1 / 10 / 100 concepts (UCE, ErasePro default, ErasePro progressive),
generation latency and peak GPU memory, at SD-1.4 size (float16) and at FLUX.1 text-path size (bfloat16).

    .venv/bin/python benchmarks/gpu.py [--device cuda] [--budget-s 270] [--json OUT]
    .venv/bin/python benchmarks/gpu.py --device cpu --tiny --concepts 1 2 --repeats 2   # what the tests run

Sizes (random weights; building is excluded from every time):
  * ``sd14`` — :func:`erasepro_core.tiny.sd14_sized_pipeline`: CLIP ViT-L/14's text tower and SD-1.4's UNet
    (320/640/1280/1280, 64×64 latents, so generation costs what SD-1.4 does at 512 px; the VAE is tiny);
  * ``flux`` — :func:`erasepro_core.tiny.flux_text_path_pipeline`: CLIP ViT-L/14 (pooled), a T5 v1.1 encoder
    (``--t5``, FLUX.1's own is xxl) at ``--max-sequence-length`` tokens and the transformer's two text sites; no
    transformer blocks, so no generation row;
  * ``sd3`` (not in the default run) — :func:`erasepro_core.tiny.sd3_text_path_pipeline`: CLIP-L and CLIP-bigG
    with projections, T5 (``--t5``) at min(``--max-sequence-length``, 256) tokens (the pipeline's default) and
    the transformer's two text sites; no generation row either.
``--tiny`` swaps in the tiny test pipelines (seconds on a CPU). On a CPU everything runs in float32.

Per size, method and concept count: ``--repeats`` *warm* jobs, reported as median and the
mean's 95 % t-interval; peak GPU memory is the most any warm job allocated above the loaded pipeline. Rows run
in order of importance and stop when ``--budget-s`` is spent (the rest are listed as skipped), so one run fits
a 5-minute slot. Each method's first row (smallest concept count) also reports its *first-ever* job: an empty
in-memory statistics cache, so the preserve pass included, as a base model's first job on a new worker. The
issue's target — 100 concepts, ErasePro default, under 1 s at SD-1.4 size on one GPU — is
checked at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from erase_speed import ANCHORS, WORDS  # noqa: E402

METHODS = {"UCE": {"method": "uce"}, "ErasePro default": {}, "ErasePro progressive": {"schedule": "front"}}
DTYPES = {"sd14": torch.float16, "flux": torch.bfloat16, "sd3": torch.bfloat16}  # on an accelerator; CPU: float32
TARGET_S = 1.0  # 100 concepts, ErasePro default, SD-1.4 size, one GPU
# two-sided 95 % Student t quantiles by degrees of freedom (a larger df uses the normal's 1.96)
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 15: 2.13,
       20: 2.09, 30: 2.04}


def interval(times: list[float]) -> dict[str, Any]:
    """n, median, mean and the mean's 95 % t-interval (None for a single sample)."""
    n = len(times)
    out: dict[str, Any] = {"n": n, "median": statistics.median(times), "mean": statistics.fmean(times)}
    if n > 1:
        t = T95.get(n - 1) or next((v for k, v in sorted(T95.items()) if k >= n - 1), 1.96)
        half = t * statistics.stdev(times) / math.sqrt(n)
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
    else:
        out["ci95"] = None
    return out


class Device:
    """Synchronised wall times and peak allocated memory on one device (memory: CUDA only)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cuda = name.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def timed(self, fn: Callable[[], Any]) -> tuple[Any, float, int | None]:
        """(result, seconds, peak bytes allocated above what was allocated before)."""
        if self.cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t = time.perf_counter()
        out = fn()
        self.sync()
        dt = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() - base if self.cuda else None
        return out, dt, peak

    def describe(self) -> str:
        if self.cuda:
            return torch.cuda.get_device_name()
        return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def build(size: str, tiny: bool, device: Device, t5: str, length: int) -> Any:
    """The pipeline for ``size``, built directly on the device (random init there is fast), then cast."""
    from erasepro_core import tiny as builders

    if size == "sd14":
        make = builders.tiny_sd_pipeline if tiny else builders.sd14_sized_pipeline
    elif size == "flux":
        make = builders.tiny_flux_pipeline if tiny else (lambda: builders.flux_text_path_pipeline(t5, length))
    else:
        make = builders.tiny_sd3_pipeline if tiny else (lambda: builders.sd3_text_path_pipeline(t5, min(length, 256)))
    with torch.device(device.name):
        pipe = make()
    dtype = DTYPES[size] if device.cuda else torch.float32
    pipe = pipe.to(device.name, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def spec_for(method: str, n: int) -> Any:
    from erasepro_core import ErasureSpec

    edits = [{"target": WORDS[i % len(WORDS)] + (f" {i // len(WORDS)}" if i >= len(WORDS) else ""),
              "anchor": ANCHORS[i % len(ANCHORS)]} for i in range(n)]
    return ErasureSpec.model_validate({"edits": edits, **METHODS[method]})


def erase_rows(pipe: Any, size: str, device: Device, concepts: list[int], repeats: int, out_of_time: Callable[[], bool]
               ) -> list[dict[str, Any]]:
    from erasepro_core import erase
    from erasepro_core.preserve import FeatureCache

    rows = []
    for method in METHODS:
        cache = FeatureCache(store=None)  # empty: the first job pays the preserve pass, as a base model's first
        for n in concepts:
            row: dict[str, Any] = {"size": size, "what": "erase", "method": method, "concepts": n}
            rows.append(row)
            if out_of_time():
                row["skipped"] = "budget"
                continue
            spec = spec_for(method, n)
            res, first, _ = device.timed(lambda: erase(pipe, spec, cache=cache))  # noqa: B023
            warm, peaks = [], []
            for _ in range(repeats):
                res, dt, peak = device.timed(lambda: erase(pipe, spec, cache=cache))  # noqa: B023
                warm.append(dt)
                peaks.append(peak)
            # only the method's first row starts from an empty cache (its first job is a first-ever one)
            row.update(first_s=first if n == concepts[0] else None, warm=interval(warm) if warm else None,
                       peak_gpu_mb=max(peaks) / 2**20 if peaks and peaks[0] is not None else None,
                       columns=res.report["n_constraints"], width=res.report["context_width"],
                       kv_residual=res.report["summary"]["kv_residual"],
                       max_residual=res.report["summary"]["max_residual"])
            print(f"  {size} erase {method:21s} {n:4d}: first job {first:.3f}s, warm median "
                  f"{row['warm']['median'] if warm else float('nan'):.3f}s, residual {row['kv_residual']:.1e}",
                  flush=True)
    return rows


def generate_row(pipe: Any, size: str, device: Device, repeats: int, tiny: bool, out_of_time: Callable[[], bool]
                 ) -> dict[str, Any]:
    from erasepro_core.pipeline import default_resolution, generate, sampling_defaults

    (steps, _), _ = sampling_defaults(pipe)
    steps = 2 if tiny else steps
    row: dict[str, Any] = {"size": size, "what": "generate", "steps": steps, "resolution": default_resolution(pipe)}
    if out_of_time():
        row["skipped"] = "budget"
        return row
    device.timed(lambda: generate(pipe, "a photo of a cat", steps=steps))  # first call: kernels, autotuning
    times, peaks = [], []
    for seed in range(max(repeats, 1)):
        _, dt, peak = device.timed(lambda: generate(pipe, "a photo of a cat", steps=steps, seed=seed))  # noqa: B023
        times.append(dt)
        peaks.append(peak)
    row.update(latency=interval(times), peak_gpu_mb=max(peaks) / 2**20 if peaks[0] is not None else None)
    print(f"  {size} generate ({steps} steps, {row['resolution']} px): median {row['latency']['median']:.3f}s",
          flush=True)
    return row


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| size | what | method | concepts | first-ever (s) | warm median (s) | warm 95 % CI (s) | n "
             "| peak GPU (MB) | K/V residual |", "|---|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['size']} | {r['what']} | {r.get('method', '-')} | {r.get('concepts', '-')} "
                         f"| skipped ({r['skipped']}) | | | | | |")
            continue
        stats = r.get("warm") or r.get("latency") or {}
        res = f"{r['kv_residual']:.1e}" if r.get("kv_residual") is not None else "-"
        ci = stats.get("ci95")
        ci_s = f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "-"
        what = r["what"] if r["what"] == "erase" else f"generate ({r['steps']} steps, {r['resolution']} px)"
        lines.append(f"| {r['size']} | {what} | {r.get('method', '-')} | {r.get('concepts', '-')} "
                     f"| {_fmt(r.get('first_s'))} | {_fmt(stats.get('median'))} | {ci_s} | {stats.get('n', 0)} "
                     f"| {_fmt(r.get('peak_gpu_mb'), 0)} | {res} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", nargs="+", default=["sd14", "flux"], choices=["sd14", "flux", "sd3"])
    ap.add_argument("--concepts", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--repeats", type=int, default=5, help="warm jobs per row (and generations)")
    ap.add_argument("--budget-s", type=float, default=270.0, help="no new row starts after this many seconds")
    ap.add_argument("--t5", default="xxl", choices=["small", "base", "large", "xl", "xxl"])
    ap.add_argument("--max-sequence-length", type=int, default=512)
    ap.add_argument("--tiny", action="store_true", help="the tiny test pipelines (a CPU check of the script)")
    ap.add_argument("--json", type=Path, help="write every row and the machine's description here")
    args = ap.parse_args(argv)

    from erasepro_core.pipeline import quiet_libraries

    quiet_libraries()
    device = Device(args.device)
    t0 = time.perf_counter()
    out_of_time = lambda: time.perf_counter() - t0 > args.budget_s  # noqa: E731
    print(f"device: {device.describe()}; torch {torch.__version__}; sizes {args.sizes}; budget {args.budget_s:.0f}s",
          flush=True)
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        if out_of_time():
            rows.append({"size": size, "what": "erase", "skipped": "budget"})
            continue
        t = time.perf_counter()
        pipe = build(size, args.tiny, device, args.t5, args.max_sequence_length)
        device.sync()
        resident = torch.cuda.memory_allocated() / 2**20 if device.cuda else None
        print(f"{size}: built in {time.perf_counter() - t:.1f}s"
              + (f", {resident:.0f} MB resident" if resident is not None else ""), flush=True)
        rows += erase_rows(pipe, size, device, sorted(args.concepts), args.repeats, out_of_time)
        if size == "sd14":  # the FLUX text path has no transformer blocks to sample with
            rows.append(generate_row(pipe, size, device, args.repeats, args.tiny, out_of_time))
        del pipe
        if device.cuda:
            torch.cuda.empty_cache()
    total = time.perf_counter() - t0
    print()
    print(table(rows))
    target = next((r for r in rows if r["size"] == "sd14" and r.get("method") == "ErasePro default"
                   and r.get("concepts") == 100 and not r.get("skipped")), None)
    verdict = None
    if target is not None and not args.tiny:
        verdict = target["warm"]["median"] < TARGET_S if target.get("warm") else None
        print(f"\ntarget (100 concepts, ErasePro default, SD-1.4 size, warm < {TARGET_S:.0f} s): "
              f"{'met' if verdict else 'not met'} on {device.describe()}")
    print(f"total {total:.1f}s")
    if args.json:
        args.json.write_text(json.dumps({"device": device.describe(), "torch": torch.__version__, "tiny": args.tiny,
                                         "dtype": {s: str(DTYPES[s] if device.cuda else torch.float32) for s in
                                                   args.sizes}, "t5": args.t5,
                                         "max_sequence_length": args.max_sequence_length, "total_s": total,
                                         "target_met": verdict, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
