"""UCE (Gandikota et al., 2024), the baseline: a ridge-regularised least-squares K/V edit.

W = W_o Q,  Q = I + s_e (c* − c) cᵀ K⁻¹,  K = λI + s_e c cᵀ + s_p Σ c_p c_pᵀ  (UCE's own closed form, refactored).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from erasepro_core.methods.base import EditInputs, KVEdit, MethodConfig


class UCEConfig(MethodConfig):
    """UCE's λ (``lam``, flat name ``uce_lambda``) and its erase/preserve scales s_e, s_p."""

    flat_prefix = "uce_"

    name: Literal["uce"] = "uce"
    lam: float = Field(default=0.5, gt=0, le=1e6, allow_inf_nan=False, alias="lambda",
                       description="UCE baseline: its λ (the ridge of K = λI + …).")
    erase_scale: float = Field(default=1.0, ge=0, le=1e6, allow_inf_nan=False,
                               description="UCE baseline: the erase scale s_e.")
    preserve_scale: float = Field(default=1.0, ge=0, le=1e6, allow_inf_nan=False,
                                  description="UCE baseline: the preserve scale s_p.")


def kv_edit(config: UCEConfig, inputs: EditInputs) -> KVEdit:
    """A = s_e (c* − c), B = cᵀ K⁻¹ (un-normalised preserve sums, as UCE's code)."""
    import torch

    from erasepro_core.solver import gram_rank, in_dspace, moments

    c, c_star, pres = inputs.x, inputs.y, inputs.preserve
    d, n = c.shape
    # Past n = d: c cᵀ and (c* − c) cᵀ summed in batches, P = s_e (c* − c) cᵀ K⁻¹ formed as two d × d factors.
    s, t = moments(c, c_star, subtract_x=True) if in_dspace(n, d) else (c @ c.T, None)
    k = config.lam * torch.eye(d, dtype=torch.float64, device=c.device) + config.erase_scale * s
    if pres is not None and pres.n:
        k += config.preserve_scale * pres.gram
    if t is not None:
        return KVEdit(config.erase_scale * t, torch.linalg.inv(k), gram_rank(s, n))
    b = torch.linalg.solve(k, c).T  # cᵀ K⁻¹ (K symmetric)
    return KVEdit(config.erase_scale * (c_star - c), b, int(torch.linalg.matrix_rank(c)))
