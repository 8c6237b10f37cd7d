"""The soft residual (``residual_ridge`` τ): Δ = argmin ‖Δ‖²_M + ‖Δ X − R‖²/ε, ε = τ·tr(XᵀM⁻¹X)/n, the same from
the n-space and the d-space solve, tending to the zero-residual edit as τ → 0, and used by ErasePro only from
``exact_below`` columns per context width on."""

from __future__ import annotations

import pytest
import torch

from erasepro_core.methods import EditInputs, EraseProConfig, method_for
from erasepro_core.solver import Metric, constraint_map, dspace_map, moments, relative, zero_residual_factors
from erasepro_core.stats import stats_of


def _problem(seed: int, d: int, n: int, preserve: int = 30):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, n, generator=g, dtype=torch.float64)
    y = torch.randn(d, n, generator=g, dtype=torch.float64)
    c = torch.randn(d, preserve, generator=g, dtype=torch.float64)
    return x, y, c @ c.T / preserve


@pytest.mark.parametrize("n", [5, 24, 70])
def test_soft_residual_is_the_minimiser_of_its_objective(n):
    """The gradient of ‖Δ‖²_M + ‖ΔX − R‖²/ε vanishes at the returned Δ, on both sides of n = d."""
    d, tau = 24, 0.7
    x, y, cov = _problem(n, d, n)
    metric = Metric.build(d, cov, 1.0, 0.05)
    a, b, _ = zero_residual_factors(x, y, metric, subtract_x=True, gram_ridge=tau)
    delta, r = a @ b, y - x
    m = metric.chol @ metric.chol.T
    eps = tau * float(torch.trace(x.T @ metric.solve(x))) / n
    grad = delta @ m + (delta @ x - r) @ x.T / eps
    assert relative(grad, r @ x.T / eps) < 1e-9
    assert relative(delta @ x - r, r) > 1e-3  # a real residual: the constraint is soft


def test_nspace_and_dspace_soft_solves_agree():
    d, n, tau = 16, 16, 2.0  # the n-space solve at n = d against the d-space one on the same problem
    x, y, cov = _problem(1, d, n)
    metric = Metric.build(d, cov, 1.0, 0.1)
    g, rank_n = constraint_map(x, metric, gram_ridge=tau)
    s, t = moments(x, y, subtract_x=True)
    a, b, rank_d = dspace_map(s, t, metric, gram_ridge=tau, n=n)
    assert rank_n == rank_d == d
    assert relative(a @ b - (y - x) @ g, (y - x) @ g) < 1e-9


def test_soft_residual_tends_to_the_exact_edit():
    x, y, cov = _problem(2, 20, 8)
    metric = Metric.build(20, cov, 1.0, 0.05)
    a0, b0, _ = zero_residual_factors(x, y, metric, subtract_x=True)
    exact = a0 @ b0
    gaps = []
    for tau in (1.0, 1e-2, 1e-4):
        a, b, _ = zero_residual_factors(x, y, metric, subtract_x=True, gram_ridge=tau)
        gaps.append(relative(a @ b - exact, exact))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3


def test_erasepro_is_exact_below_exact_below_and_soft_from_it():
    d = 32
    g = torch.Generator().manual_seed(3)
    c = torch.randn(d, 40, generator=g, dtype=torch.float64)
    pres = stats_of(c)
    metric = Metric.build(d, c @ c.T / 40, 1.0, 1e-2)
    for n, soft in [(7, False), (8, True), (40, True)]:  # exact_below 0.25 → 8 columns of 32
        x = torch.randn(d, n, generator=g, dtype=torch.float64)
        y = torch.randn(d, n, generator=g, dtype=torch.float64)
        config = EraseProConfig()
        edit = method_for(config).kv_edit(config, EditInputs(x, y, pres, lambda: metric))
        residual = relative(edit.a @ edit.b @ x - (y - x), y - x)
        assert (residual > 1e-3) == soft, (n, residual)
        config0 = EraseProConfig(residual_ridge=0.0)
        edit0 = method_for(config0).kv_edit(config0, EditInputs(x, y, pres, lambda: metric))
        if n <= d:
            assert relative(edit0.a @ edit0.b @ x - (y - x), y - x) < 1e-8  # τ = 0: always exact
