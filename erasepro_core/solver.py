"""Closed-form solvers, in float64.

Zero residual:  Δ = argmin λ‖Δ C_p‖² + α‖Δ‖²  s.t.  Δ X = R   ⇒   Δ = R (Xᵀ M⁻¹ X)⁺ Xᵀ M⁻¹,  M = αI + λ C_p C_pᵀ.
(UCE's closed form lives with its method, :mod:`erasepro_core.methods.uce`.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Eigenvalues of XᵀM⁻¹X below this fraction of the largest are treated as zero (rank deficiency).
RCOND = 1e-10


@dataclass(frozen=True)
class Metric:
    """The Cholesky factor of ``M = αI + λ C`` for one site, reusable for any X."""

    chol: torch.Tensor  # lower-triangular, float64

    @classmethod
    def build(cls, d_in: int, cov: torch.Tensor | None, preserve_weight: float, ridge: float,
              device: torch.device | str | None = None) -> Metric:
        """``cov`` is the mean preserve covariance C̄; α is taken relative to tr(C̄)/d so it is scale-free.
        Built on ``cov``'s device (or ``device`` without one): the solve stays where the model is."""
        if cov is None:
            m = torch.eye(d_in, dtype=torch.float64, device=device)
        else:
            cov = cov.to(torch.float64)
            scale = float(torch.trace(cov)) / d_in or 1.0
            m = preserve_weight * cov
            m.diagonal().add_(ridge * scale)
        return cls(torch.linalg.cholesky(m))

    def solve(self, x: torch.Tensor) -> torch.Tensor:
        """M⁻¹ x."""
        return torch.cholesky_solve(x.to(torch.float64), self.chol)


def constraint_map(x: torch.Tensor, metric: Metric, rcond: float = RCOND) -> tuple[torch.Tensor, int]:
    """G = (Xᵀ M⁻¹ X)⁺ Xᵀ M⁻¹ (n × d_in) and the numerical rank of X, so that Δ = R G.

    When X has full column rank, Δ X = R G X = R exactly; otherwise R G X is R projected onto
    X's row space: the least-norm least-squares solution.
    """
    x = x.to(torch.float64)
    z = metric.solve(x)  # M⁻¹X, d_in × n
    gram = x.T @ z
    gram = 0.5 * (gram + gram.T)
    # Full column rank is the common case: a Cholesky factor is ~10x cheaper than an eigendecomposition.
    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) == 0:
        pivots = chol.diagonal() ** 2
        if float(pivots.min()) > rcond * float(gram.diagonal().max()) * 1e3:
            return torch.cholesky_solve(z.T, chol), x.shape[1]
    evals, evecs = torch.linalg.eigh(gram)
    keep = evals > rcond * max(float(evals[-1]), 0.0)
    inv = torch.where(keep, 1.0 / evals.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(evals))
    g = (evecs * inv) @ (evecs.T @ z.T)
    return g, int(keep.sum())


def relative(num: torch.Tensor, den: torch.Tensor) -> float:
    """‖num‖/‖den‖ (0 when both vanish)."""
    d = float(torch.linalg.norm(den.to(torch.float64)))
    n = float(torch.linalg.norm(num.to(torch.float64)))
    return n / d if d > 0 else (0.0 if n == 0 else float("inf"))
