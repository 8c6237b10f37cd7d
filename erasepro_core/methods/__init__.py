"""Erasure methods as modules: each a config (torch-free) and one ``kv_edit`` function, registered here.

Adding a method: a new module with ``XConfig(MethodConfig)`` (``name: Literal["x"]``; settings prefixed on the
wire by ``flat_prefix``, e.g. ``"x_"``) and ``kv_edit(config, inputs) -> KVEdit``, and one :func:`register`
line below. Everything else reads this registry: the spec's accepted configs and wire names
(:mod:`erasepro_core.spec`), the CLI's flags (from the config's fields), the REST options and so the console's
form, the plan (``kv_edit``, hardening rounds) and the cost model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property

from erasepro_core.methods.base import EditFunction, EditInputs, KVEdit, MethodConfig
from erasepro_core.methods.erasepro import EraseProConfig
from erasepro_core.methods.uce import UCEConfig


@dataclass(frozen=True)
class Method:
    config: type[MethodConfig]
    module: str  # where ``kv_edit`` lives (imported on first use: it needs torch)

    @property
    def name(self) -> str:
        return str(self.config.model_fields["name"].default)

    @property
    def kv_edit(self) -> EditFunction:
        return importlib.import_module(self.module).kv_edit

    @cached_property
    def settings(self) -> dict[str, str]:
        """Wire (flat) name -> field name of this method's settings (every field but ``name``)."""
        return {self.config.flat_prefix + (f.alias or k): k for k, f in self.config.model_fields.items()
                if k != "name"}


METHODS: dict[str, Method] = {}


def register(config: type[MethodConfig], module: str) -> None:
    """Make ``config`` (its ``name`` the key) a method whose edit is ``module.kv_edit``."""
    method = Method(config, module)
    taken = {wire: other.name for other in METHODS.values() if other.name != method.name for wire in other.settings}
    clash = sorted(set(method.settings) & taken.keys())
    if clash:
        raise ValueError(f"method {method.name!r}: setting(s) {clash} already belong to another method; give it a "
                         "flat_prefix")
    METHODS[method.name] = method


register(EraseProConfig, "erasepro_core.methods.erasepro")
register(UCEConfig, "erasepro_core.methods.uce")


def method_for(config: MethodConfig) -> Method:
    return METHODS[config.name]


def flat_settings() -> dict[str, dict[str, str]]:
    """Method name -> (wire name -> field name) of its settings, for every registered method."""
    return {name: m.settings for name, m in METHODS.items()}


__all__ = ["METHODS", "EditInputs", "EraseProConfig", "KVEdit", "Method", "MethodConfig", "UCEConfig",
           "flat_settings", "method_for", "register"]
