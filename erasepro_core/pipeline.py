"""Loading, saving and sampling diffusers pipelines: one place for every model family ErasePro edits."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from erasepro_core.bundled import BUNDLED, bundled_model_path
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
    """Load a pipeline from ``"bundled"`` (the shipped shapes model), a local diffusers folder or a hub id.

    Only safetensors weights are accepted. Hub ids download only where the network and
    ``HF_HUB_OFFLINE`` allow; local folders never touch the network.
    """
    ref = str(ref)
    if ref == BUNDLED:
        ref = str(bundled_model_path())
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
    return int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))


@torch.no_grad()
def generate(
    pipe: DiffusionPipeline,
    prompt: str,
    *,
    negative_prompt: str | None = None,
    seed: int = 0,
    steps: int = 25,
    guidance: float = 5.0,
    width: int | None = None,
    height: int | None = None,
    num_images: int = 1,
) -> list[Image.Image]:
    """Sample images; the same arguments on the same pipeline give the same pixels (CPU generator)."""
    size = default_resolution(pipe)
    generator = torch.Generator("cpu").manual_seed(int(seed))
    out = pipe(
        prompt=prompt,
        negative_prompt=negative_prompt,
        num_inference_steps=int(steps),
        guidance_scale=float(guidance),
        width=int(width or size),
        height=int(height or size),
        num_images_per_prompt=int(num_images),
        generator=generator,
    )
    return list(out.images)
