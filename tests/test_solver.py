"""The closed-form solvers on random matrices (property-based)."""

from __future__ import annotations

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from reference_formulas import uce_weight, zero_residual_delta

from erasepro_core.solver import Metric, constraint_map, relative


def _problem(seed: int, d_in: int, n: int, d_out: int, rank: int | None = None, preserve: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d_in, n, generator=g, dtype=torch.float64)
    if rank is not None:
        x = torch.randn(d_in, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, n, generator=g,
                                                                                     dtype=torch.float64)
    r = torch.randn(d_out, n, generator=g, dtype=torch.float64)
    cov = None
    if preserve:
        c = torch.randn(d_in, preserve, generator=g, dtype=torch.float64)
        cov = c @ c.T / preserve
    return x, r, cov


def _objective(delta: torch.Tensor, metric: Metric) -> float:
    m = metric.chol @ metric.chol.T  # M = λC̄ + α s I, so λ‖ΔC_p‖² + α‖Δ‖² ∝ tr(Δ M Δᵀ)
    return float(torch.trace(delta @ m @ delta.T))


dims = st.tuples(st.integers(2, 24), st.integers(1, 24), st.integers(1, 8), st.integers(0, 40), st.integers(0, 10**6))


@settings(max_examples=60, deadline=None)
@given(dims)
def test_constraint_holds_exactly_when_x_has_full_column_rank(params):
    d_in, n, d_out, preserve, seed = params
    n = min(n, d_in)
    x, r, cov = _problem(seed, d_in, n, d_out, preserve=preserve)
    # "Full column rank" numerically: a random square X is now and then nearly singular (cond 1e6+), where the
    # solver rightly reports a lower rank and the least-squares residual instead of claiming zero.
    assume(float(torch.linalg.cond(x)) < 1e4)
    metric = Metric.build(d_in, cov, preserve_weight=1.0, ridge=0.1)
    delta, rank = zero_residual_delta(r, x, metric)
    assert rank == n
    assert relative(delta @ x - r, r) < 1e-8


@settings(max_examples=60, deadline=None)
@given(dims)
def test_no_feasible_perturbation_lowers_the_objective(params):
    d_in, n, d_out, preserve, seed = params
    n = min(n, d_in - 1)
    if n < 1:
        return
    x, r, cov = _problem(seed, d_in, n, d_out, preserve=preserve)
    metric = Metric.build(d_in, cov, preserve_weight=2.0, ridge=0.05)
    delta, _ = zero_residual_delta(r, x, metric)
    g = torch.Generator().manual_seed(seed + 1)
    proj = torch.eye(d_in, dtype=torch.float64) - x @ torch.linalg.pinv(x)  # E·proj·X = 0
    base = _objective(delta, metric)
    for _ in range(5):
        e = torch.randn(d_out, d_in, generator=g, dtype=torch.float64) @ proj
        e *= 0.1 * float(delta.norm()) / max(float(e.norm()), 1e-12)
        assert relative((delta + e) @ x - r, r) < 1e-7
        assert _objective(delta + e, metric) >= base * (1 - 1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 20), st.integers(1, 3), st.integers(0, 10**6))
def test_rank_deficient_x_gives_the_least_squares_residual(d_in, rank, seed):
    n = d_in + 3  # more columns than dimensions, and rank-deficient
    x, r, _ = _problem(seed, d_in, n, 4, rank=rank)
    metric = Metric.build(d_in, None, 1.0, 1.0)
    delta, found = zero_residual_delta(r, x, metric)
    assert found == rank
    # The best any Δ can do is project R onto X's row space.
    best = r @ torch.linalg.pinv(x) @ x
    assert relative(delta @ x - best, r) < 1e-6
    assert relative(delta @ x - r, r) > 1e-3  # and the residual is reported, not hidden


def test_constraint_map_is_shared_across_sites():
    x, _, cov = _problem(0, 16, 5, 1, preserve=30)
    metric = Metric.build(16, cov, 1.0, 0.1)
    g, _ = constraint_map(x, metric)
    y = torch.randn(16, 5, dtype=torch.float64)
    for seed in range(3):
        w = torch.randn(7 + seed, 16, dtype=torch.float64)
        delta = w @ (y - x) @ g  # Δ_W = W_o P
        assert relative((w + delta) @ x - w @ y, w @ y) < 1e-9


def test_uce_formula_reduces_to_its_published_form():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(6, 10, generator=g, dtype=torch.float64)
    c = torch.randn(10, 3, generator=g, dtype=torch.float64)
    c_star = torch.randn(10, 3, generator=g, dtype=torch.float64)
    c_p = torch.randn(10, 4, generator=g, dtype=torch.float64)
    lam = 0.5
    new = uce_weight(w, c, c_star, c_p, lam)
    left = lam * w + w @ c_star @ c.T + w @ c_p @ c_p.T
    right = lam * torch.eye(10, dtype=torch.float64) + c @ c.T + c_p @ c_p.T
    assert relative(new - left @ torch.linalg.inv(right), new) < 1e-10
