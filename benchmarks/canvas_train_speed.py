"""Seconds per canvas UNet training step (the recipe's batch, random data): eager float32, bfloat16 autocast or
``torch.compile``, on a given number of threads. What decides whether the recipe fits its 2-hour budget.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/canvas_train_speed.py --modes eager,bf16 --threads 1

Prints one line per mode: warm-up seconds (compile included) and the median seconds per step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("eager", "bf16", "compile")


def time_mode(mode: str, steps: int, warm: int) -> tuple[float, float]:
    import torch
    import torch.nn.functional as F

    from erasepro_core.canvas.config import CanvasTrainConfig
    from erasepro_core.canvas.train import make_unet

    cfg = CanvasTrainConfig()
    torch.manual_seed(0)
    unet = make_unet(cfg)
    fn = torch.compile(unet) if mode == "compile" else unet
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    x = torch.randn(cfg.batch, 4, 16, 16)
    ctx = torch.randn(cfg.batch, cfg.max_length, cfg.text_hidden)
    t = torch.randint(0, 1000, (cfg.batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            out = fn(x, t, encoder_hidden_states=ctx).sample
        loss = F.mse_loss(out.float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(warm):
        step()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return warm_s, statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="eager,bf16", help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warm", type=int, default=3)
    args = ap.parse_args()
    modes = args.modes.split(",")
    if bad := [m for m in modes if m not in MODES]:
        ap.error(f"unknown mode(s) {bad}; choose from {MODES}")
    import torch

    torch.set_num_threads(args.threads)
    for mode in modes:
        warm_s, per_step = time_mode(mode, args.steps, args.warm)
        print(f"{mode}: {per_step:.3f} s/step (median of {args.steps}; warm-up {warm_s:.1f} s, "
              f"{args.threads} thread(s))", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
