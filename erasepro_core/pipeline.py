"""Loading, saving and sampling diffusers pipelines: one place for every model family ErasePro edits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from erasepro_core.bundled import SHIPPED_MODELS
from erasepro_core.devices import pick_device, resolve_dtype


class ModelNotFoundError(FileNotFoundError):
    """The model reference names neither a local diffusers folder nor a reachable hub model."""


def quiet_libraries() -> None:
    """Silence the libraries' per-component progress bars and advisory warnings (CLI and workers)."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_pipeline(
    ref: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> DiffusionPipeline:
    """Load a pipeline from ``"bundled"`` (the shipped shapes model), ``"canvas"`` (the shipped canvas-world
    model), a local diffusers folder or a hub id.

    Only safetensors weights are accepted. Hub ids download only where the network and
    ``HF_HUB_OFFLINE`` allow; local folders never touch the network.
    """
    ref = str(ref)
    if ref in SHIPPED_MODELS:
        ref = str(SHIPPED_MODELS[ref])
    local = Path(ref).expanduser()
    kwargs: dict = {"use_safetensors": True}
    if (torch_dtype := resolve_dtype(dtype)) is not None:
        kwargs["dtype"] = torch_dtype
    looks_local = ref.startswith(("/", "./", "../", "~")) or local.exists()
    if looks_local:
        if not (local / "model_index.json").is_file():
            raise ModelNotFoundError(f"{local} is not a diffusers pipeline folder (no model_index.json)")
        pipe = DiffusionPipeline.from_pretrained(str(local), local_files_only=True, **kwargs)
    else:
        try:
            pipe = DiffusionPipeline.from_pretrained(ref, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"could not load {ref!r}: not a local diffusers folder, and the hub has no such model in "
                f"safetensors or cannot be reached ({type(exc).__name__})"
            ) from exc
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None  # moderation is this product's job; SD's checker would blank images
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(torch.device(pick_device(None if device is None else str(device))))


def save_pipeline(pipe: DiffusionPipeline, directory: str | os.PathLike) -> Path:
    """Write a full diffusers folder (safetensors) that :func:`load_pipeline` reads back."""
    directory = Path(directory)
    pipe.save_pretrained(str(directory), safe_serialization=True)
    return directory


def default_resolution(pipe: DiffusionPipeline) -> int:
    """The UNet's sample size in pixels; a transformer (FLUX) has none, its VAE's says what it was trained at."""
    unet = getattr(pipe, "unet", None)
    if unet is None:
        return int(pipe.vae.config.sample_size)
    return int(unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))


def sampling_defaults(pipe: DiffusionPipeline) -> tuple[tuple[int, float], dict[str, Any]]:
    """The family's default (steps, guidance) and the extra call arguments its pipeline needs (see Adapter)."""
    from erasepro_core.adapters import UnsupportedModelError, adapter_for

    try:
        adapter = adapter_for(pipe)
    except UnsupportedModelError:
        return (25, 5.0), {}
    return adapter.sampling, adapter.call_kwargs


@torch.no_grad()
def generate(
    pipe: DiffusionPipeline,
    prompt: str,
    *,
    negative_prompt: str | None = None,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    width: int | None = None,
    height: int | None = None,
    num_images: int = 1,
) -> list[Image.Image]:
    """Sample images; the same arguments on the same pipeline give the same pixels (CPU generator).

    ``steps``/``guidance``/``width``/``height`` left as None take the model family's defaults.
    """
    size = default_resolution(pipe)
    (default_steps, default_guidance), extra = sampling_defaults(pipe)
    generator = torch.Generator("cpu").manual_seed(int(seed))
    out = pipe(
        prompt=prompt,
        negative_prompt=negative_prompt,
        num_inference_steps=int(steps or default_steps),
        guidance_scale=float(default_guidance if guidance is None else guidance),
        width=int(width or size),
        height=int(height or size),
        num_images_per_prompt=int(num_images),
        generator=generator,
        **extra,
    )
    return list(out.images)
