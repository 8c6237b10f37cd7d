"""Model families, one row each: torch-free facts shared by the adapters, the base-model registry and the worker.

A row names the diffusers pipeline classes the family edits and the function that builds its
:class:`~erasepro_core.adapters.Adapter` (imported on first use: it needs torch), the registry's labels for it
with each label's native resolution (used when a model's configs are not local, e.g. hub models), the dtype a
worker loads it in on an accelerator when the registry names none, and which text-encoder layers feed the
denoiser (for the registry's bounds on ``layers``).

Adding a family: an adapter module and one :func:`register` line below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    name: str  # the adapter's family: written into deltas and reports, and keys the LoRA name maps ("sd", …)
    pipelines: tuple[str, ...]  # diffusers pipeline class names this family edits (subclasses included)
    builder: str  # "module:function" that turns such a pipeline into its Adapter
    labels: dict[str, int]  # registry label (``family = "sd1"`` in the base-model file) -> native resolution
    accelerator_dtype: str | None = None  # dtype on a GPU when the registry names none (None: as stored)
    text_towers: tuple[str, ...] = ("text_encoder",)  # text encoders whose layers the progressive stage edits
    penultimate: bool = False  # the denoiser reads the towers' penultimate layer (so one fewer layer feeds it)

    @property
    def build(self) -> Callable[[Any], Any]:
        module, _, function = self.builder.partition(":")
        return getattr(importlib.import_module(module), function)


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> None:
    FAMILIES[family.name] = family


register(Family("sd", ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"),
                "erasepro_core.adapters.sd:sd_adapter", {"sd1": 512, "sd2": 768}))
register(Family("sdxl", ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
                         "StableDiffusionXLInpaintPipeline"),
                "erasepro_core.adapters.sdxl:sdxl_adapter", {"sdxl": 1024},
                text_towers=("text_encoder", "text_encoder_2"), penultimate=True))
register(Family("flux", ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"),
                "erasepro_core.adapters.flux:flux_adapter", {"flux": 1024},
                accelerator_dtype="bfloat16",  # FLUX.1 ships bf16; its T5 overflows in float16
                text_towers=("text_encoder_2",)))
register(Family("sd3", ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline",
                        "StableDiffusion3InpaintPipeline"),
                "erasepro_core.adapters.sd3:sd3_adapter", {"sd3": 1024},
                accelerator_dtype="bfloat16",  # SD-3.x ships bf16, and its T5 overflows in float16 as FLUX's does
                text_towers=("text_encoder_3",)))  # progressive: T5 only (the CLIPs also feed the pooled vector)

DEFAULT_LABEL = "sd1"  # the registry's label when an entry names none


def family_of_label(label: str) -> Family | None:
    """The family a registry label (``sd1``, ``sd2``, ``sdxl``, ``flux``, …) belongs to."""
    return next((f for f in FAMILIES.values() if label in f.labels), None)


def family_of_pipeline(class_names: list[str] | tuple[str, ...]) -> Family | None:
    """The family of the first of ``class_names`` (a pipeline class and its bases, most derived first) that one
    edits."""
    for name in class_names:
        for f in FAMILIES.values():
            if name in f.pipelines:
                return f
    return None
