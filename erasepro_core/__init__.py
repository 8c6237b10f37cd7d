"""ErasePro core: zero-residual, progressive closed-form concept erasure for diffusion pipelines.

Importing the package is cheap and torch-free (the spec and the method configs are pydantic only); the
names that need torch load on first use. No module shares a name with a public function.
"""

from __future__ import annotations

import importlib
from typing import Any

from erasepro_core.methods import EraseProConfig, UCEConfig
from erasepro_core.spec import Edit, ErasureSpec

__version__ = "0.1.0"

_LAZY = {
    "erase": "erasepro_core.erasure",
    "ErasureResult": "erasepro_core.erasure",
    "ErasureError": "erasepro_core.plan",
    "Delta": "erasepro_core.delta",
    "apply_delta": "erasepro_core.delta",
    "applied_delta": "erasepro_core.delta",
    "load_pipeline": "erasepro_core.pipeline",
    "generate": "erasepro_core.pipeline",
    "context_features": "erasepro_core.encode",
    "adapter_for": "erasepro_core.adapters",
    "export_checkpoint": "erasepro_core.lora",
    "lora_state_dict": "erasepro_core.lora",
}

__all__ = ["Edit", "EraseProConfig", "ErasureSpec", "UCEConfig", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'erasepro_core' has no attribute {name!r}")
