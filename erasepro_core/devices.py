"""Device and dtype choices, made in one place (names are torch-free; torch loads only to resolve them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DTYPE_NAMES: tuple[str, ...] = ("float32", "float16", "bfloat16")


def pick_device(requested: str | None = None) -> str:
    """``requested`` if given, else ``cuda`` when a GPU is visible, else ``cpu``."""
    if requested:
        return str(requested)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A dtype name (one of :data:`DTYPE_NAMES`) or torch dtype -> torch dtype; ``None`` = as stored."""
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {list(DTYPE_NAMES)}, got {dtype!r}")
    return getattr(torch, dtype)
