"""ErasePro core: zero-residual, progressive closed-form concept erasure for diffusion pipelines.

Importing the package is cheap and torch-free (the spec and the method configs are pydantic only); the
names that need torch load on first use. No module shares a name with a public function.
"""

from __future__ import annotations

from erasepro_core.lazy import lazy_names
from erasepro_core.methods import EraseProConfig, UCEConfig
from erasepro_core.spec import Edit, ErasureSpec

__version__ = "0.1.0"

__getattr__ = lazy_names(__name__, {
    "erasepro_core.erasure": ("erase", "ErasureResult"),
    "erasepro_core.plan": ("ErasureError",),
    "erasepro_core.delta": ("Delta", "apply_delta", "applied_delta"),
    "erasepro_core.pipeline": ("load_pipeline", "generate"),
    "erasepro_core.encode": ("context_features",),
    "erasepro_core.adapters": ("adapter_for",),
    "erasepro_core.lora": ("export_checkpoint", "lora_state_dict"),
})

__all__ = ["Edit", "EraseProConfig", "ErasureSpec", "UCEConfig", "__version__", *__getattr__.names]

