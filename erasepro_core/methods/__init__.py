"""Erasure methods as modules: each a config (torch-free) and one ``kv_edit`` function, registered here.

Adding a method: a new module with ``XConfig(MethodConfig)`` (``name: Literal["x"]``) and
``kv_edit(config, inputs) -> KVEdit``, and one :func:`register` line below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from erasepro_core.methods.base import EditFunction, EditInputs, KVEdit, MethodConfig
from erasepro_core.methods.erasepro import EraseProConfig
from erasepro_core.methods.uce import UCEConfig


@dataclass(frozen=True)
class Method:
    config: type[MethodConfig]
    module: str  # where ``kv_edit`` lives (imported on first use: it needs torch)

    @property
    def kv_edit(self) -> EditFunction:
        return importlib.import_module(self.module).kv_edit


METHODS: dict[str, Method] = {}


def register(config: type[MethodConfig], module: str) -> None:
    name = config.model_fields["name"].default
    METHODS[name] = Method(config, module)


register(EraseProConfig, "erasepro_core.methods.erasepro")
register(UCEConfig, "erasepro_core.methods.uce")


def method_for(config: MethodConfig) -> Method:
    return METHODS[config.name]


__all__ = ["METHODS", "EditInputs", "EraseProConfig", "KVEdit", "Method", "MethodConfig", "UCEConfig", "method_for",
           "register"]
