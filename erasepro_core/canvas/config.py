"""The canvas training recipe as a dataclass (torch-free, so the CLI can build its parser cheaply)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CanvasTrainConfig:
    """Every knob of the recipe (defaults = the shipped model)."""

    seed: int = 0
    n_images: int = 60_000
    captions_per_image: int = 3
    max_length: int = 40
    # text tower: 128 wide so that 10 / 25 / 50 styles x 5 templates sit below / at / above the context width
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    clip_steps: int = 800
    clip_batch: int = 128
    clip_lr: float = 1e-3
    vae_steps: int = 1000
    vae_batch: int = 48
    vae_lr: float = 1e-3
    vae_kl: float = 1e-6
    unet_channels: tuple[int, ...] = (32, 64, 128)
    unet_steps: int = 6000
    batch: int = 64
    lr: float = 5e-4
    cross_attn_lr_mult: float = 2.0
    warmup: int = 200
    ema: float = 0.999
    p_empty: float = 0.1
    min_snr: float = 5.0
    log_every: int = 50
    gap_every: int = 250
    ckpt_every: int = 250
    threads: int = 2
