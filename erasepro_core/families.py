"""Model families, one row each: torch-free facts shared by the adapters, the base-model registry and the worker.

A row names the diffusers pipeline classes the family edits and the function that builds its
:class:`~erasepro_core.adapters.Adapter` (imported on first use: it needs torch), the registry's labels for it
with each label's native resolution and sizes (used when a model's configs are not local, e.g. hub models: the
door's memory estimates, :mod:`erasepro_jobs.memory`), the dtype a worker loads it in on an accelerator when the
registry names none, which text-encoder layers feed the denoiser (for the registry's bounds on ``layers``), and
the names LoRA loaders give its edited layers (:mod:`erasepro_core.formats`).

Adding a family: an adapter module and one :func:`register` line below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

GiB = 2**30


@dataclass(frozen=True)
class Sizes:
    """A hub model's sizes, as :func:`erasepro_jobs.memory.model_facts` would read them from its folder: each
    text tower's ``(width, layers, MLP width, token positions)``, Σ d_out·d_in of the denoiser's K/V weights that
    read the context (``attn2.to_k/to_v``, or ``add_k_proj/add_v_proj`` in a transformer), the denoiser's widest
    block, the VAE's widest block and the bytes of its safetensors weights."""

    towers: tuple[tuple[int, int, int, int], ...]
    kv_params: int
    denoiser_width: int
    vae_width: int
    weight_bytes: int


@dataclass(frozen=True)
class LoraKeys:
    """How LoRA loaders name a family's edited layers: the CLIP text encoders they address, each with its kohya
    prefix (T5 towers have no LoRA keys), the UNet's kohya layout (``diffusers`` module paths, or ``sgm``: the
    original block numbering SDXL LoRAs use) and the transformer modules that have kohya names."""

    text_prefixes: dict[str, str] = field(default_factory=lambda: {"text_encoder": "lora_te1"})
    kohya_unet: str = "diffusers"
    kohya_transformer: tuple[str, ...] = ()


@dataclass(frozen=True)
class Family:
    name: str  # the adapter's family: written into deltas and reports, and keys the LoRA name maps ("sd", …)
    pipelines: tuple[str, ...]  # diffusers pipeline class names this family edits (subclasses included)
    builder: str  # "module:function" that turns such a pipeline into its Adapter
    labels: dict[str, int]  # registry label (``family = "sd1"`` in the base-model file) -> native resolution
    accelerator_dtype: str | None = None  # dtype on a GPU when the registry names none (None: as stored)
    text_towers: tuple[str, ...] = ("text_encoder",)  # text encoders whose layers the progressive stage edits
    penultimate: bool = False  # the denoiser reads the towers' penultimate layer (so one fewer layer feeds it)
    sizes: dict[str, Sizes] = field(default_factory=dict)  # registry label -> a hub model's sizes (as ``labels``)
    lora: LoraKeys | None = None  # None: no LoRA loader has a key map for this family (delta/diffusers only)

    @property
    def build(self) -> Callable[[Any], Any]:
        module, _, function = self.builder.partition(":")
        return getattr(importlib.import_module(module), function)


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> None:
    FAMILIES[family.name] = family


def _sd_kv(widths: list[int], d: int) -> int:
    return 2 * d * sum(widths)  # to_k and to_v per UNet transformer block of width w reading a d-wide context


CLIP_L, CLIP_G, T5_XXL = (768, 12, 3072, 77), (1280, 32, 5120, 77), (4096, 24, 10240, 512)
register(Family(
    "sd", ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"),
    "erasepro_core.adapters.sd:sd_adapter", {"sd1": 512, "sd2": 768},
    # SD-1.4: CLIP ViT-L/14; 16 transformer blocks (320 ×2+3, 640 ×2+3, 1280 ×2+1+3). SD-2: OpenCLIP ViT-H/14's
    # penultimate layer.
    sizes={"sd1": Sizes((CLIP_L,), _sd_kv([320] * 5 + [640] * 5 + [1280] * 6, 768), 1280, 512, int(2.2 * GiB)),
           "sd2": Sizes(((1024, 23, 4096, 77),), _sd_kv([320] * 5 + [640] * 5 + [1280] * 6, 1024), 1280, 512,
                        int(2.6 * GiB))},
    lora=LoraKeys({"text_encoder": "lora_te"})))
register(Family(
    "sdxl", ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline"),
    "erasepro_core.adapters.sdxl:sdxl_adapter", {"sdxl": 1024},
    text_towers=("text_encoder", "text_encoder_2"), penultimate=True,
    # CLIP ViT-L/14 + OpenCLIP bigG/14 (penultimate layers); 70 transformer blocks (640 ×10, 1280 ×60).
    sizes={"sdxl": Sizes(((768, 11, 3072, 77), (1280, 31, 5120, 77)), _sd_kv([640] * 10 + [1280] * 60, 2048),
                         1280, 512, int(6.9 * GiB))},
    lora=LoraKeys({"text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}, kohya_unet="sgm")))
register(Family(
    "flux", ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"),
    "erasepro_core.adapters.flux:flux_adapter", {"flux": 1024},
    accelerator_dtype="bfloat16",  # FLUX.1 ships bf16; its T5 overflows in float16
    text_towers=("text_encoder_2",),
    # FLUX.1-dev: CLIP-L + T5-XXL (512 tokens); 19 double blocks' add_k/add_v (3072²); bf16 weights ≈ 33.7 GB.
    sizes={"flux": Sizes((CLIP_L, T5_XXL), 19 * 2 * 3072 * 3072, 3072, 512, int(31.4 * GiB))},
    # the two linear layers ErasePro edits have kohya names (the converters of diffusers and ComfyUI know both)
    lora=LoraKeys(kohya_transformer=("context_embedder", "time_text_embed.text_embedder.linear_1"))))
register(Family(
    "sd3", ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline"),
    "erasepro_core.adapters.sd3:sd3_adapter", {"sd3": 1024},
    accelerator_dtype="bfloat16",  # SD-3.x ships bf16, and its T5 overflows in float16 as FLUX's does
    text_towers=("text_encoder_3",),  # progressive: T5 only (the CLIPs also feed the pooled vector)
    # SD-3 Medium: CLIP-L + CLIP-G + T5-XXL; 24 joint blocks' add_k/add_v (1536²); fp16 weights ≈ 15.5 GB.
    sizes={"sd3": Sizes((CLIP_L, CLIP_G, T5_XXL), 24 * 2 * 1536 * 1536, 1536, 512, int(14.4 * GiB))},
    lora=LoraKeys()))  # diffusers/PEFT keys for its sites; no kohya names for its transformer

DEFAULT_LABEL = "sd1"  # the registry's label when an entry names none


def family_of_label(label: str) -> Family | None:
    """The family a registry label (``sd1``, ``sd2``, ``sdxl``, ``flux``, …) belongs to."""
    return next((f for f in FAMILIES.values() if label in f.labels), None)


def hub_sizes(label: str) -> Sizes:
    """The sizes of a hub model with this registry label (SD-1 sizes for a label no family has: the preset a
    missing folder most often means)."""
    family = family_of_label(label)
    if family is None or label not in family.sizes:
        family, label = family_of_label(DEFAULT_LABEL), DEFAULT_LABEL
    assert family is not None
    return family.sizes[label]


def family_of_pipeline(class_names: list[str] | tuple[str, ...]) -> Family | None:
    """The family of the first of ``class_names`` (a pipeline class and its bases, most derived first) that one
    edits."""
    for name in class_names:
        for f in FAMILIES.values():
            if name in f.pipelines:
                return f
    return None
