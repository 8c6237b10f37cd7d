"""Model adapters: where a pipeline's text towers, editable layers and K/V sites are, one module per family."""

from erasepro_core.adapters.base import (
    LEGACY_TEXT_PREFIX,
    Adapter,
    KVSite,
    TextTower,
    UnsupportedModelError,
    resolve_parameter,
)
from erasepro_core.adapters.registry import ADAPTERS, adapter_for, register

__all__ = ["ADAPTERS", "LEGACY_TEXT_PREFIX", "Adapter", "KVSite", "TextTower", "UnsupportedModelError",
           "adapter_for", "register", "resolve_parameter"]
