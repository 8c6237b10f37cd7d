"""Reference closed forms the tests check the library against (written the textbook way, not the fast way)."""

from __future__ import annotations

import torch

from erasepro_core.solver import RCOND, Metric, constraint_map


def zero_residual_delta(
    r: torch.Tensor, x: torch.Tensor, metric: Metric, rcond: float = RCOND
) -> tuple[torch.Tensor, int]:
    """Δ (d_out × d_in) with Δ X = R (exactly when X has full column rank) minimising λ‖ΔC_p‖² + α‖Δ‖²."""
    g, rank = constraint_map(x, metric, rcond)
    return r.to(torch.float64) @ g, rank


def uce_weight(
    w_o: torch.Tensor,
    c: torch.Tensor,
    c_star: torch.Tensor,
    c_p: torch.Tensor | None,
    lam: float = 0.5,
    erase_scale: float = 1.0,
    preserve_scale: float = 1.0,
) -> torch.Tensor:
    """UCE's published form W = (λW_o + s_e W_o c* cᵀ + s_p W_o C_p C_pᵀ)(λI + s_e c cᵀ + s_p C_p C_pᵀ)⁻¹."""
    w_o = w_o.to(torch.float64)
    c, c_star = c.to(torch.float64), c_star.to(torch.float64)
    d_in = w_o.shape[1]
    left = lam * w_o + erase_scale * (w_o @ c_star) @ c.T
    right = lam * torch.eye(d_in, dtype=torch.float64) + erase_scale * c @ c.T
    if c_p is not None and c_p.numel():
        c_p = c_p.to(torch.float64)
        cpp = preserve_scale * c_p @ c_p.T
        left = left + w_o @ cpp
        right = right + cpp
    # right is symmetric positive definite: solve W·right = left as right·Wᵀ = leftᵀ.
    return torch.linalg.solve(right, left.T).T
