"""Model adapters: where a pipeline's text towers, editable layers and K/V sites are, one module per family
(the families themselves, with their pipeline classes, are rows of :mod:`erasepro_core.families`)."""

from erasepro_core.adapters.base import (
    LEGACY_TEXT_PREFIX,
    Adapter,
    KVSite,
    TextTower,
    UnsupportedModelError,
    resolve_parameter,
)
from erasepro_core.adapters.registry import adapter_for

__all__ = ["LEGACY_TEXT_PREFIX", "Adapter", "KVSite", "TextTower", "UnsupportedModelError", "adapter_for",
           "resolve_parameter"]
