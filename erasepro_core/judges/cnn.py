"""What the world judges (``shapes``, ``canvas``) share: their conv blocks, their training loop and how their
weights load. Each world keeps its own net, heads, augmentation and data (its ``judge`` module)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


def conv_block(i: int, o: int) -> torch.nn.Sequential:
    """3×3 conv (padding 1) -> batch norm -> ReLU."""
    return torch.nn.Sequential(torch.nn.Conv2d(i, o, 3, padding=1), torch.nn.BatchNorm2d(o), torch.nn.ReLU())


def load_weights(net: torch.nn.Module, folder: Path) -> torch.nn.Module:
    """``folder/judge.safetensors`` into ``net`` (as float32, whatever the file stores); returns ``net``."""
    net.load_state_dict({k: v.float() for k, v in load_file(str(folder / "judge.safetensors")).items()})
    return net


def saved_width(folder: Path) -> int:
    """The conv width a saved judge was built with (its ``config.json``)."""
    return int(json.loads((folder / "config.json").read_text())["width"])


def fit_heads(net: torch.nn.Module, images: Callable[[torch.Tensor], torch.Tensor], labels: torch.Tensor, *,
              steps: int, batch: int, lr: float, g: torch.Generator, log: Callable[[str], None],
              log_every: int) -> None:
    """Train ``net`` (one logit group per label column) in place: each step draws ``batch`` indices i (generator
    ``g``), reads ``images(i)`` (the world's augmented batch) and minimises  Σ_j CE(logits_j, labels[i, j])  with
    AdamW (weight decay 1e-4), the learning rate warmed up over 100 steps, then cosine to 0."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    t0 = time.time()
    net.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(len(labels), (batch,), generator=g)
        logits = net(images(idx))
        y = labels[idx]
        loss = sum(F.cross_entropy(lg, y[:, j]) for j, lg in enumerate(logits))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            log(f"[judge] step {step} loss {float(loss):.4f} ({time.time() - t0:.0f}s)")
