"""ErasePro core: zero-residual, progressive closed-form concept erasure for diffusion pipelines.

Importing the package is cheap and torch-free; the heavy names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ErasureSpec": "erasepro_core.spec",
    "Edit": "erasepro_core.spec",
    "erase": "erasepro_core.erase",
    "ErasureResult": "erasepro_core.erase",
    "Delta": "erasepro_core.delta",
    "apply_delta": "erasepro_core.delta",
    "applied_delta": "erasepro_core.delta",
    "load_pipeline": "erasepro_core.pipeline",
    "generate": "erasepro_core.pipeline",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'erasepro_core' has no attribute {name!r}")
