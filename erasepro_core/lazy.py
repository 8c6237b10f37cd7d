"""Names a package exports but imports on first use (PEP 562), so importing the package stays cheap (torch-free)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, where: dict[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: a name in ``where[module]`` is imported from ``module`` when first
    read and then kept on the package (later reads skip the hook). A lazy name must not also be a submodule's
    name: importing that submodule would set the package attribute to the module."""
    table = {name: module for module, names in where.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    __getattr__.names = tuple(table)  # type: ignore[attr-defined]
    return __getattr__
