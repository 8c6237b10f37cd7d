"""Model families by pipeline class: ``adapter_for(pipe)`` walks the pipeline's class hierarchy (by name, so
knowing a family imports nothing) and calls the builder of the first family that edits it.

The families are the rows of :data:`erasepro_core.families.FAMILIES`; adding one is an adapter module and one
row there.
"""

from __future__ import annotations

from erasepro_core.adapters.base import Adapter, UnsupportedModelError
from erasepro_core.families import FAMILIES, family_of_pipeline


def adapter_for(pipe: object) -> Adapter:
    """Describe a diffusers pipeline's editable parts, or raise :class:`UnsupportedModelError`."""
    family = family_of_pipeline([cls.__name__ for cls in type(pipe).__mro__])
    if family is None:
        names = sorted(p for f in FAMILIES.values() for p in f.pipelines)
        raise UnsupportedModelError(f"{type(pipe).__name__} is not a supported pipeline; ErasePro edits "
                                    f"{', '.join(names)}")
    return family.build(pipe)
