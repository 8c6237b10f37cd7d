"""The d-space solve (past n = d constrained columns): the same edit as the n-space one on both sides of the
switch, for every method, and an erase whose report still measures the weights as written."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import erasepro_core.erasure as erasure_mod
import erasepro_core.progressive as progressive_mod
import erasepro_core.solver as solver
from erasepro_core.methods import EditInputs, EraseProConfig, UCEConfig, method_for
from erasepro_core.preserve import FeatureCache
from erasepro_core.solver import Metric, constraint_map, dspace_map, gram_rank, moments, relative, zero_residual_factors
from erasepro_core.stats import stats_of


def _problem(seed: int, d: int, n: int, rank: int | None = None, preserve: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, n, generator=g, dtype=torch.float64)
    if rank is not None:
        x = torch.randn(d, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, n, generator=g,
                                                                                 dtype=torch.float64)
    y = torch.randn(d, n, generator=g, dtype=torch.float64)
    cov = None
    if preserve:
        c = torch.randn(d, preserve, generator=g, dtype=torch.float64)
        cov = c @ c.T / preserve
    return x, y, cov


@settings(max_examples=60, deadline=None)
@given(st.integers(4, 40), st.integers(-3, 3), st.sampled_from([1.0, 2.5]), st.integers(0, 60),
       st.booleans(), st.integers(0, 10**6))
def test_dspace_map_equals_the_nspace_map_on_both_sides_of_the_switch(d, side, scale, preserve, deficient, seed):
    """n from d − 3 to 2.5 d + 3: P = R G from the n × n Gram and from the d × d moments agree to 1e-6."""
    n = max(1, round(d * scale) + side)
    rank = max(1, d // 3) if deficient else None
    x, y, cov = _problem(seed, d, n, rank=rank, preserve=preserve)
    # The rank decision compares an eigenvalue with RCOND·λmax on both sides; a random X with one right at the
    # cut would make either choice correct. Keep problems whose kept spectrum is clear of it.
    metric = Metric.build(d, cov, 1.0, 0.05)
    xt = torch.linalg.solve_triangular(metric.chol, x, upper=False)
    sv2 = torch.linalg.svdvals(xt) ** 2
    if bool(((sv2 / sv2[0] > 1e-12) & (sv2 / sv2[0] < 1e-7)).any()):
        return
    g, rank_n = constraint_map(x, metric)
    p_n = (y - x) @ g
    s, t = moments(x, y, subtract_x=True, batch=7)  # batches that do not divide n
    a, b, rank_d = dspace_map(s, t, metric)
    assert rank_d == rank_n
    assert relative(a @ b - p_n, p_n) < 1e-6


def test_dspace_keeps_least_squares_optimality():
    """Past n = d the constraints are over-determined: Δ X is R projected on X's row space (least squares)."""
    x, y, _ = _problem(1, 12, 50)
    a, b, rank = zero_residual_factors(x, y, Metric.build(12, None, 1.0, 1.0), subtract_x=True)
    assert rank == 12
    r = y - x
    best = r @ torch.linalg.pinv(x) @ x
    assert relative(a @ b @ x - best, r) < 1e-9
    assert relative(a @ b @ x - r, r) > 0.1  # a real residual, reported, not hidden


def test_moments_are_the_products_whatever_the_batch_and_dtype():
    x, y, _ = _problem(2, 9, 31)
    for batch, dtype in [(1, torch.float64), (5, torch.float64), (64, torch.float32)]:
        s, t = moments(x.to(dtype), y.to(dtype), subtract_x=True, batch=batch)
        xx = x.to(dtype).double()
        assert torch.allclose(s, xx @ xx.T, rtol=1e-12, atol=1e-12)
        assert torch.allclose(t, (y.to(dtype).double() - xx) @ xx.T, rtol=1e-12, atol=1e-12)


def test_small_n_stays_in_nspace_bit_for_bit():
    """n ≤ d: the factors are exactly (Y − X, G) the n-space solve has always returned."""
    x, y, cov = _problem(3, 16, 16, preserve=20)
    metric = Metric.build(16, cov, 1.0, 0.1)
    a, b, _ = zero_residual_factors(x, y, metric, subtract_x=True)
    g, _ = constraint_map(x, metric)
    assert torch.equal(a, y - x) and torch.equal(b, g)


@pytest.mark.parametrize("n", [10, 47])
def test_uce_dspace_equals_its_thin_factors(n):
    """UCE past n = d forms P = s_e (c* − c) cᵀ K⁻¹ from the moments; the thin factors give the same P."""
    d = 20
    x, y, _ = _problem(4, d, n)
    pres = stats_of(torch.randn(d, 30, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    config = UCEConfig(erase_scale=0.7, preserve_scale=1.3, lam=0.4)
    edit = method_for(config).kv_edit(config, EditInputs(x, y, pres, lambda: None))
    k = 0.4 * torch.eye(d, dtype=torch.float64) + 0.7 * x @ x.T + 1.3 * pres.gram
    expected = 0.7 * (y - x) @ x.T @ torch.linalg.inv(k)
    assert relative(edit.a @ edit.b - expected, expected) < 1e-10
    assert edit.rank == min(n, d)
    if n > d:
        assert edit.a.shape == (d, d)  # nothing n-sized is returned


def test_gram_rank_finds_a_deficient_rank():
    x, _, _ = _problem(6, 30, 500, rank=7)
    assert gram_rank(x @ x.T, 500) == 7


def _erase(pipe, spec, force_nspace: bool, monkeypatch):
    if force_nspace:
        for mod in (solver, erasure_mod, progressive_mod):
            monkeypatch.setattr(mod, "in_dspace", lambda n, d: False)
    from erasepro_core import erase

    try:
        return erase(pipe, spec, cache=FeatureCache(store=None))
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("method", [{}, {"harden_rounds": 1}])
def test_erase_past_the_switch_writes_what_the_nspace_solve_writes(sd_pipe, monkeypatch, method):
    """A to_end job on the tiny pipeline (≈ 730 columns, d = 64) in d-space against the same job forced through
    the n × n solve: the written K/V updates agree within 1e-6 (float32 rounding of the weights aside)."""
    spec = {"edits": [{"target": "van gogh", "anchor": "art"}, {"target": "snoopy", "anchor": ""}],
            "token_policy": "to_end", **method}
    auto = _erase(sd_pipe, spec, False, monkeypatch)
    forced = _erase(sd_pipe, spec, True, monkeypatch)
    n, d = auto.report["n_constraints"], 64
    assert n > d
    base = dict(sd_pipe.unet.named_parameters())
    for key, w in auto.delta.tensors.items():
        w_o = base[key.removeprefix("unet.")].detach()
        upd_a, upd_f = w.double() - w_o.double(), forced.delta.tensors[key].double() - w_o.double()
        # float32 weights: each written value is within half an ulp of its float64 update
        ulp = float(torch.linalg.norm(w_o.double())) * 2**-23
        assert float(torch.linalg.norm(upd_a - upd_f)) <= 1e-6 * float(torch.linalg.norm(upd_f)) + 4 * ulp
    for sa, sf in zip(auto.report["sites"], forced.report["sites"], strict=True):
        assert sa["rank"] == sf["rank"]
        assert sa["residual"] == pytest.approx(sf["residual"], rel=1e-4)


def test_dspace_report_measures_the_written_weights(sd_pipe):
    """The report's K/V residual is measured on the weights as written (its columns recomputed here)."""
    from erasepro_core import erase
    from erasepro_core.encode import context_features
    from erasepro_core.kv import report_columns

    spec = {"edits": [{"target": "van gogh", "anchor": "art"}], "token_policy": "to_end",
            "templates": ["a painting by {}", "{} style art"]}
    res = erase(sd_pipe, spec, cache=FeatureCache(store=None))
    n = res.report["n_constraints"]
    assert n > 64
    # The constrained columns: every position from the concept's last token to the end, target vs anchor.
    from erasepro_core.adapters import adapter_for
    from erasepro_core.features import build_pairs

    adapter = adapter_for(sd_pipe)
    pairs = build_pairs(adapter.towers[0].tokenizer, [("van gogh", "art")], spec["templates"], "to_end")
    t_prompts = [t.format("van gogh") for t in spec["templates"]]
    a_prompts = [t.format("art") for t in spec["templates"]]
    t_pos: list[list[int]] = [[] for _ in t_prompts]
    a_pos: list[list[int]] = [[] for _ in a_prompts]
    for rt, pt, ra, pa in pairs.positions:
        t_pos[rt].append(pt)
        a_pos[ra].append(pa)
    x = context_features(sd_pipe, t_prompts, t_pos).double()
    y = context_features(sd_pipe, a_prompts, a_pos).double()
    assert x.shape[1] == n
    keep = report_columns(n, 0)
    site = next(s for s in res.report["sites"] if s["stage"] == "final")
    w_o = dict(sd_pipe.unet.named_parameters())[site["site"].removeprefix("unet.")].detach().double()
    w = res.delta.tensors[site["site"]].double()
    measured = relative(w @ x[:, keep] - w_o @ y[:, keep], w_o @ y[:, keep])
    assert site["residual"] == pytest.approx(measured, rel=1e-3)
    assert site["n_columns"] == n


def test_erasepro_config_reaches_dspace_through_the_method():
    """The method function itself dispatches: n > d gives d × k factors."""
    x, y, cov = _problem(7, 10, 35, preserve=15)
    metric = Metric.build(10, cov, 1.0, 0.01)
    edit = method_for(EraseProConfig()).kv_edit(EraseProConfig(), EditInputs(x, y, None, lambda: metric))
    assert edit.a.shape[0] == 10 and edit.b.shape[1] == 10 and edit.a.shape[1] == edit.rank == 10


def _hardening(d: int, n: int, m: int, rounds: int, reuse: bool, monkeypatch):
    """Hardening ErasePro's edit over n columns (m targets attacked per round); ``reuse``: the solve may read the
    moments hardening keeps summed. Returns the result and how many columns were summed into moments."""
    from erasepro_core.harden import harden

    x, y, cov = _problem(8, d, n, preserve=2 * d)
    metric = Metric.build(d, cov, 1.0, 0.05)
    w = torch.randn(3 * d, d, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    config = EraseProConfig(residual_ridge=0.0)  # the exact solve: nothing hides a difference
    summed_cols = [0]
    real = solver._accumulate

    def counting(s, t, xb, r, subtract_x, batch):
        summed_cols[0] += xb.shape[1]
        real(s, t, xb, r, subtract_x, batch)

    def solve(xs, ys, summed=None):
        inputs = EditInputs(xs, ys, None, lambda: metric, 0, summed if reuse else None)
        return method_for(config).kv_edit(config, inputs)

    with monkeypatch.context() as mp:
        mp.setattr(solver, "_accumulate", counting)
        out = harden(solve, x, y, x[:, :m], y[:, :m], w.T @ w, rounds)
    return out, summed_cols[0]


@pytest.mark.parametrize(("d", "n"), [(12, 30), (12, 8)])  # d-space throughout; n-space first, then past d
def test_hardening_sums_each_column_once_and_solves_the_same(d, n, monkeypatch):
    m, rounds = 4, 3
    kept, kept_cols = _hardening(d, n, m, rounds, True, monkeypatch)
    fresh, fresh_cols = _hardening(d, n, m, rounds, False, monkeypatch)
    p_kept, p_fresh = kept.edit.a @ kept.edit.b, fresh.edit.a @ fresh.edit.b
    assert relative(p_kept - p_fresh, p_fresh) < 1e-9
    assert kept.edit.rank == fresh.edit.rank
    assert relative(kept.x - fresh.x, fresh.x) < 1e-9  # the attack's columns, found from each edit
    for a, b in zip(kept.rounds, fresh.rounds, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-4)
    n_final = n + rounds * m
    assert kept.x.shape[1] == n_final
    # Kept: each column summed once (from the round the solve crossed into d-space on). Recomputed: every d-space
    # solve sums all its columns again (on top of what hardening keeps anyway).
    assert kept_cols == n_final
    again = sum(n + k * m for k in range(rounds + 1) if n + k * m > d)
    assert fresh_cols == n_final + again and again > n_final


def test_uce_reads_kept_moments_as_its_own(monkeypatch):
    from erasepro_core.solver import Moments

    d, n = 10, 40
    x, y, _ = _problem(10, d, n)
    pres = stats_of(torch.randn(d, 30, generator=torch.Generator().manual_seed(11), dtype=torch.float64))
    config = UCEConfig()
    fresh = method_for(config).kv_edit(config, EditInputs(x, y, pres, lambda: None))
    summed = Moments.of(x[:, :25], y[:, :25])
    summed.add(x[:, 25:], y[:, 25:])
    kept = method_for(config).kv_edit(config, EditInputs(x, y, pres, lambda: None, 0, summed))
    assert relative(kept.a @ kept.b - fresh.a @ fresh.b, fresh.a @ fresh.b) < 1e-12
    with pytest.raises(ValueError, match="cover 40 columns"):
        method_for(config).kv_edit(config, EditInputs(x[:, :30], y[:, :30], pres, lambda: None, 0, summed))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_towers_columns_are_stacked_as_concatenated_and_released(dtype):
    """SDXL's two towers: X is their columns one above the other (what torch.cat gives), each tower's released
    from its pass once copied."""
    from erasepro_core.erasure import _stacked
    from erasepro_core.progressive import TowerPass

    g = torch.Generator().manual_seed(12)
    parts = [torch.randn(40, d, generator=g).T for d in (3, 5)]  # d × n views, as the gathers give them
    passes = [TowerPass(x=p, y=p + 1, xh=None, yh=None) for p in parts]
    x = _stacked(passes, "x", dtype)
    assert x.dtype == dtype and torch.equal(x, torch.cat(parts).to(dtype))
    assert all(p.x.numel() == 0 for p in passes) and all(p.y.numel() for p in passes)
