"""The training recipes as dataclasses (torch-free, so the CLI can build its parser cheaply)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoopConfig:
    """The knobs of the training loops both worlds share (:func:`erasepro_core.shapes.train.fit_vae`,
    :func:`~erasepro_core.shapes.train.fit_unet`) whose defaults both recipes ship; each world's recipe adds its
    own sizes, step counts and batches."""

    seed: int = 0
    vae_lr: float = 1e-3
    vae_kl: float = 1e-6
    cross_attn_lr_mult: float = 2.0
    warmup: int = 200
    ema: float = 0.999
    p_empty: float = 0.1
    min_snr: float = 5.0
    log_every: int = 50
    gap_every: int = 250
    ckpt_every: int = 250
    threads: int = 2


@dataclass
class TrainConfig(LoopConfig):
    """Every knob of the shapes recipe (defaults = the shipped model)."""

    n_images: int = 50_000
    max_length: int = 20
    text_hidden: int = 192
    text_layers: int = 3
    text_heads: int = 3
    text_steps: int = 700
    text_batch: int = 256
    text_lr: float = 1e-3
    captions_per_combo: int = 300
    vae_steps: int = 1200
    vae_batch: int = 64
    unet_steps: int = 8000
    batch: int = 128
    lr: float = 6e-4
