"""A toy third erasure method for tests/test_method_registry.py: one module, registered there by one line.

Least-squares K/V edit scaled by ``toy_strength``:  P = s (Y − X) X⁺  (s = 1: every target column maps exactly).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from erasepro_core.methods.base import EditInputs, KVEdit, MethodConfig


class ToyConfig(MethodConfig):
    """``strength`` s of P = s (Y − X) X⁺; ``note`` only shows that Literal settings get choices."""

    flat_prefix: ClassVar[str] = "toy_"

    name: Literal["toy"] = "toy"
    strength: float = Field(default=1.0, gt=0, le=10, allow_inf_nan=False, description="Toy: the scale s.")
    note: Literal["plain", "fancy"] = Field(default="plain", description="Toy: a choice that changes nothing.")


def kv_edit(config: ToyConfig, inputs: EditInputs) -> KVEdit:
    """A = s (Y − X), B = X⁺."""
    import torch

    x, y = inputs.x.double(), inputs.y.double()
    return KVEdit(config.strength * (y - x), torch.linalg.pinv(x), int(torch.linalg.matrix_rank(x)))
