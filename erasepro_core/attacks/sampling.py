"""Prompt contexts and images for the attacks: encode prompts, sample from a context tensor, judge.

Every image an attack draws goes through :func:`sample`; image ``i`` of a call uses the CPU generator seed
``seeds[i]``, so an attack is deterministic given its seed. Works with SD-1.x/2.x-style pipelines
(``encode_prompt`` + ``prompt_embeds``), which is what the context-space attacks need.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from erasepro_core.attacks.result import JudgeFn

MAX_IMAGES = 20_000  # per attack call: a bound on time and memory whatever budget is asked for


class AttackBudgetError(ValueError):
    """The requested budget would exceed the attack's bounds."""


@dataclass(frozen=True)
class Sampling:
    """How candidate images are drawn: DDIM steps, classifier-free guidance, batch size, time limit (s)."""

    steps: int = 25
    guidance: float = 5.0
    batch: int = 64
    max_seconds: float = 1800.0
    threshold: float = 0.5  # an image counts as the target when P(target | image) ≥ threshold


class Clock:
    """Wall-clock bound of one attack call: ``expired`` once ``max_seconds`` have passed."""

    def __init__(self, max_seconds: float) -> None:
        self.t0, self.max_seconds = time.perf_counter(), max_seconds

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def expired(self) -> bool:
        return self.elapsed > self.max_seconds


def check_images(n: int) -> None:
    if n > MAX_IMAGES:
        raise AttackBudgetError(f"this budget needs {n} images; one attack call draws at most {MAX_IMAGES}")


def resolution(pipe) -> int:
    return int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))


@torch.no_grad()
def encode(pipe, prompts: Sequence[str]) -> torch.Tensor:
    """Context (n, L, d) the pipeline's own text encoder gives ``prompts`` (padded to the tokenizer's max)."""
    device = pipe.unet.device
    out = []
    for i in range(0, len(prompts), 256):
        out.append(pipe.encode_prompt(list(prompts[i : i + 256]), device, 1, False)[0])
    return torch.cat(out)


@torch.no_grad()
def sample(pipe, context: torch.Tensor, seeds: Sequence[int], cfg: Sampling) -> np.ndarray:
    """uint8 images (n, H, W, 3) drawn from context rows (n, L, d) with generator seeds ``seeds``."""
    check_images(len(seeds))
    size = resolution(pipe)
    uncond = encode(pipe, [""])
    context = context.to(device=pipe.unet.device, dtype=pipe.unet.dtype)
    out = []
    for i in range(0, len(seeds), cfg.batch):
        ctx = context[i : i + cfg.batch]
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[i : i + cfg.batch]]
        neg = uncond.expand(len(ctx), -1, -1).to(ctx.dtype)
        res = pipe(prompt_embeds=ctx, negative_prompt_embeds=neg, height=size, width=size,
                   num_inference_steps=cfg.steps, guidance_scale=cfg.guidance, generator=gens, output_type="np")
        out.append((np.clip(res.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)


def sample_prompts(pipe, prompts: Sequence[str], seeds: Sequence[int], cfg: Sampling) -> np.ndarray:
    """Images for text prompts (one per prompt, seed ``seeds[i]``)."""
    return sample(pipe, encode(pipe, prompts), seeds, cfg)


def judged(judge: JudgeFn, images: np.ndarray) -> np.ndarray:
    """P(target | image) as float64 (n,); an empty batch gives an empty array."""
    if len(images) == 0:
        return np.zeros(0)
    return np.asarray(judge(images), dtype=np.float64).reshape(len(images))


def instance_seeds(seed: int, n: int) -> list[int]:
    """Generator seeds of an attack's ``n`` instances (disjoint from the prompt-set evaluation seeds)."""
    return [int(seed) * 100_003 + 50_000 + i for i in range(n)]


DEFAULT_SAMPLING = Sampling()
