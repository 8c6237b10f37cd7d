"""The canvas training recipe as a dataclass (torch-free, so the CLI can build its parser cheaply)."""

from __future__ import annotations

from dataclasses import dataclass

from erasepro_core.shapes.config import LoopConfig


@dataclass
class CanvasTrainConfig(LoopConfig):
    """Every knob of the recipe (defaults = the current recipe, one run in under 2 hours on 2 cores; the shipped
    14,000-step model was trained with ``clip_steps=800, clip_stroke_negatives=0`` in three resumed parts, as its
    model card says; the shared loops' knobs in :class:`LoopConfig`)."""

    n_images: int = 60_000
    captions_per_image: int = 3
    max_length: int = 40
    # text tower: 128 wide so that 10 / 25 / 50 styles x 5 templates sit below / at / above the context width
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    clip_steps: int = 1200
    clip_batch: int = 128
    clip_lr: float = 1e-3
    # share of artist-swap hard negatives that change only the stroke (0 in the 14,000-step model's recipe)
    clip_stroke_negatives: float = 1.0
    vae_steps: int = 1000
    vae_batch: int = 48
    unet_channels: tuple[int, ...] = (32, 64, 128)
    unet_steps: int = 11000
    batch: int = 64
    lr: float = 5e-4
