"""Checkpoint formats and the key names each ecosystem's LoRA loader reads, torch-free (the API decides with it).

Formats: ``delta`` (ours), ``diffusers`` (a full pipeline folder), ``lora`` (diffusers/PEFT keys,
``<component>.<module>.lora_A.weight`` / ``lora_B``, what ``pipe.load_lora_weights`` reads) and ``kohya``
(``lora_unet_…`` / ``lora_te…`` with ``.lora_down``, ``.lora_up`` and ``.alpha``, what ComfyUI and A1111 read).

A LoRA is  W = W_o + (alpha / r) · up · down;  we always write alpha = r (scale 1).

Kohya names follow the loaders' published key maps: SD-1.x/2.x UNets by their diffusers module path
(``lora_unet_down_blocks_0_attentions_0_…``, as kohya's sd-scripts trains them), SDXL UNets by the original
(sgm) block layout (``lora_unet_input_blocks_4_1_…``, as sd-scripts writes SDXL LoRAs and as diffusers maps them
back), FLUX by its diffusers module path (``lora_transformer_context_embedder``, the OneTrainer spelling ComfyUI
maps; diffusers ≤ 0.42 silently drops the BFL spelling ``lora_unet_txt_in`` of these two layers), CLIP towers as
``lora_te_`` (SD) or ``lora_te1_``/``lora_te2_`` (SDXL, FLUX). T5 has no LoRA key in any of these loaders. SD-3's
two sites have diffusers/PEFT keys (``StableDiffusion3Pipeline.load_lora_weights`` reads them) but no kohya names.
Which of these a family has is its row's ``lora`` (:class:`erasepro_core.families.LoraKeys`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from erasepro_core.families import FAMILIES, LoraKeys

CHECKPOINT_FORMATS = ("delta", "diffusers", "lora", "kohya")
LORA_FORMATS = ("lora", "kohya")
LEGACY_TEXT_PREFIX = "text_model."  # the CLIP module prefix every published checkpoint (and loader) uses

_SGM_DOWN = re.compile(r"^down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$")
_SGM_UP = re.compile(r"^up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$")
_SGM_MID = re.compile(r"^mid_block\.attentions\.0\.(.+)$")


class FormatError(ValueError):
    """The checkpoint cannot be written in the asked format (the message names the reason or the sites)."""


def split_key(key: str) -> tuple[str, str]:
    """``unet.down_blocks.0.….to_k.weight`` -> (``unet``, ``down_blocks.0.….to_k``)."""
    component, _, rest = key.partition(".")
    if not rest.endswith(".weight"):
        raise FormatError(f"{key} is not a weight (only linear weights have LoRA factors)")
    return component, rest[: -len(".weight")]


def _text_module(module: str) -> str:
    """A CLIP module path in the published (``text_model.``-prefixed) naming, whatever transformers wrote."""
    return module if module.startswith(LEGACY_TEXT_PREFIX) else LEGACY_TEXT_PREFIX + module


def _keys(family: str) -> LoraKeys:
    """The family row's LoRA names (the default map for a family without one: check_format refuses it first)."""
    row = FAMILIES.get(family)
    return row.lora if row is not None and row.lora is not None else LoraKeys()


def _is_clip(family: str, component: str) -> bool:
    # FLUX's text_encoder_2 is T5: its blocks live under ``encoder.block.N`` and no loader has keys for them.
    return component in _keys(family).text_prefixes


def peft_name(family: str, key: str) -> str | None:
    """The module name a diffusers/PEFT LoRA uses for a delta key (``None``: no diffusers loader addresses it)."""
    component, module = split_key(key)
    if component in ("unet", "transformer"):
        return f"{component}.{module}"
    if _is_clip(family, component):
        return f"{component}.{_text_module(module)}"
    return None


def sgm_unet_name(module: str, layers_per_block: int) -> str | None:
    """A diffusers UNet cross-attention module path in the original (sgm) block layout, as kohya writes SDXL:
    down block i, attention j -> ``input_blocks.{1 + i(L+1) + j}.1``; up block i, attention j ->
    ``output_blocks.{i(L+1) + j}.1``; the mid block's attention -> ``middle_block.1``."""
    if (m := _SGM_DOWN.match(module)) is not None:
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + i * (layers_per_block + 1) + j}.1.{rest}"
    if (m := _SGM_UP.match(module)) is not None:
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{i * (layers_per_block + 1) + j}.1.{rest}"
    if (m := _SGM_MID.match(module)) is not None:
        return f"middle_block.1.{m[1]}"
    return None


def kohya_name(family: str, key: str, layers_per_block: int | None = None) -> str | None:
    """The kohya (A1111/ComfyUI) LoRA name of a delta key (``None``: no such loader addresses it).
    ``layers_per_block``: the SDXL UNet's (the sgm block numbering depends on it)."""
    component, module = split_key(key)
    keys = _keys(family)
    flat = lambda s: s.replace(".", "_")  # noqa: E731
    if component == "unet":
        if keys.kohya_unet == "sgm":
            if layers_per_block is None:
                return None
            sgm = sgm_unet_name(module, layers_per_block)
            return None if sgm is None else f"lora_unet_{flat(sgm)}"
        return f"lora_unet_{flat(module)}"
    if component == "transformer":
        return f"lora_transformer_{flat(module)}" if module in keys.kohya_transformer else None
    if component in keys.text_prefixes:
        return f"{keys.text_prefixes[component]}_{flat(_text_module(module))}"
    return None


def unaddressable(family: str, keys: Iterable[str], fmt: str, layers_per_block: int | None = None) -> list[str]:
    """The delta keys the format's loaders cannot address (an empty list: the whole edit fits)."""
    if fmt == "lora":
        return [k for k in keys if peft_name(family, k) is None]
    if fmt == "kohya":
        # The sgm numbering needs the UNet's layers_per_block only to name a site, not to know it has a name.
        lpb = 1 if _keys(family).kohya_unet == "sgm" and layers_per_block is None else layers_per_block
        return [k for k in keys if kohya_name(family, k, lpb) is None]
    return []


def check_format(family: str, keys: Iterable[str], fmt: str, layers_per_block: int | None = None) -> None:
    """Raise :class:`FormatError` when ``fmt`` is unknown or cannot carry every edited site of this family."""
    if fmt not in CHECKPOINT_FORMATS:
        raise FormatError(f"unknown checkpoint format {fmt!r}; one of {', '.join(CHECKPOINT_FORMATS)}")
    if family not in FAMILIES or FAMILIES[family].lora is None:
        if fmt in LORA_FORMATS:
            raise FormatError(f"no {fmt} key map for model family {family!r}")
        return
    keys = list(keys)
    missing = unaddressable(family, keys, fmt, layers_per_block)
    if missing:
        shown = ", ".join(m.removesuffix(".weight") for m in missing[:6])
        more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
        raise FormatError(
            f"the {fmt} format cannot carry this {family} edit: no {fmt} loader addresses {shown}{more} "
            "(T5 layers, edited by a progressive schedule on FLUX and SD-3, have no LoRA keys; SD-3's transformer "
            "has no kohya keys); download the delta or the "
            "diffusers folder instead")
