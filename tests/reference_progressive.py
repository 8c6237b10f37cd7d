"""The progressive stage as it was before its states were streamed (issue 29): every target and anchor token's
states and fc2 inputs resident at once, flattened and gathered per layer. The streamed stage
(:func:`erasepro_core.progressive.carry_tower`) is checked against it (tests/test_progressive_stream.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from erasepro_core.adapters import TextTower
from erasepro_core.features import PairSet
from erasepro_core.kv import report_columns
from erasepro_core.plan import Plan, schedule_fractions
from erasepro_core.prefix import PrefixBatch, PrefixCache, batch_for, gather_context
from erasepro_core.preserve import PreserveStats
from erasepro_core.progressive import TowerPass
from erasepro_core.solver import Metric, in_dspace, relative, zero_residual_factors

MetricFor = Callable[[tuple, Any, int], Metric]  # (site, stats, d_in) -> the cached metric


def take(flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Columns (d × n) of flattened states at a precomputed ``index``."""
    return flat[index.to(flat.device)].T


def _split(positions: list[tuple[int, int, int, int]], at: int) -> tuple[list[int], list[int]]:
    return [p[at] for p in positions], [p[at + 1] for p in positions]


def resident_carry_tower(ti: int, tower: TextTower, plan: Plan, pairs: PairSet, held: PairSet,
                         pres: PreserveStats, metric_for: MetricFor, step: Callable[[str], None],
                         prefix_cache: PrefixCache | None = None) -> TowerPass:
    """One pass: anchors through the original tower, targets carried through the tower as it is edited.
    ``prefix_cache`` serves the templates' prefix states when the tower is not edited (see :mod:`.prefix`)."""
    nt, na = len(pairs.target_ids), len(pairs.anchor_ids)
    t_rows, a_rows = pairs.target_ids + held.target_ids, pairs.anchor_ids + held.anchor_ids
    t_refs = [(p[0], p[1]) for p in pairs.positions] + [(p[0] + nt, p[1]) for p in held.positions]
    a_refs = [(p[2], p[3]) for p in pairs.positions] + [(p[2] + na, p[3]) for p in held.positions]
    t_shared, a_shared = pairs.target_shared + held.target_shared, pairs.anchor_shared + held.anchor_shared
    layers = plan.layers[ti]
    # Anchor rows follow the target rows (offset ``ao``) when both share one batch.
    ao = 0 if layers else len(t_rows)
    if layers:  # targets are carried through edited layers, anchors through the original ones: two batches
        targets = batch_for(tower, t_rows, t_shared, t_refs)
        anchors = batch_for(tower, a_rows, a_shared, a_refs)
    else:
        # Nothing is edited on this tower: targets and anchors see the same weights, so one batch encodes both
        # (the templates' shared prefixes once for both, and fewer, fuller calls per layer).
        targets = anchors = batch_for(tower, t_rows + a_rows, t_shared + a_shared,
                                      t_refs + [(r + ao, q) for r, q in a_refs])
    it = targets.index(*_split(pairs.positions, 0))
    ia = anchors.index([r + ao for r in _split(pairs.positions, 2)[0]], _split(pairs.positions, 2)[1])
    ith = targets.index([r + nt for r in _split(held.positions, 0)[0]], _split(held.positions, 0)[1])
    iah = anchors.index([r + na + ao for r in _split(held.positions, 2)[0]], _split(held.positions, 2)[1])
    flat = PrefixBatch.flat

    out = TowerPass(x=torch.empty(0), y=torch.empty(0), xh=None, yh=None)
    betas = dict(zip(layers, schedule_fractions(plan.schedule, len(layers)), strict=True))
    if layers:
        h_t, h_a = targets.embed(tower), anchors.embed(tower)
    for i in range(tower.n_context_layers if layers else 0):
        h_out, xin = targets.layer(tower, i, h_t)
        h_a = anchors.layer(tower, i, h_a)[0]
        if i not in betas:
            h_t = h_out
            continue
        beta = betas[i]
        f_in, f_a, f_out = flat(xin), flat(h_a), flat(h_out)  # flattened once per layer, gathered often
        # Past n = d_in the solve reads only d_in × d_in moments: the columns stay in the model's dtype.
        wide = in_dspace(len(it), f_in.shape[1])
        x = take(f_in, it) if wide else take(f_in, it).double()
        anchor = take(f_a, ia).double()
        gap = anchor - take(f_out, it).double()
        r = beta * gap
        stats = pres.fc2.get((ti, i))
        a, b, rank = zero_residual_factors(x, r, metric_for((ti, i), stats, x.shape[0]))
        w = tower.fc2(i).weight.detach()
        new = (w.double() + a @ b).to(w.dtype)
        applied = (new.double() - w.double())  # what the written weights actually change
        delta = applied.to(w.dtype).T
        h_t = [o + xi @ delta for o, xi in zip(h_out, xin, strict=True)]
        key = tower.fc2_name(i)
        out.tensors[key], out.originals[key] = new, w  # moved to the host once, by the caller
        cols = report_columns(x.shape[1], 0).to(x.device) if wide else slice(None)  # a bounded report
        site: dict[str, Any] = {
            "site": key, "stage": "progressive", "tower": tower.component, "depth": i, "beta": round(beta, 6),
            "n_columns": x.shape[1], "rank": rank,
            "residual": relative(applied @ x[:, cols].double() - r[:, cols], r[:, cols]),
            "gap_before": relative(gap, anchor),
            "gap_after": relative(anchor - take(flat(h_t), it).double(), anchor),
            "update_norm": relative(applied, w),
        }
        if len(ith):
            xh = take(f_in, ith).double()
            rh = beta * (take(f_a, iah) - take(f_out, ith)).double()
            site["heldout_residual"] = relative(applied @ xh - rh, rh)
        if stats is not None and stats.n:  # Δ C_s = R (G C_s): rank n, cheap
            site["preserve_drift"] = relative(a @ (b @ stats.sample.double()), w.float() @ stats.sample)
        out.sites.append(site)
        step("progressive")
    if not layers:  # the unedited batch's blocks, encoded one at a time: only the paired columns are kept
        cols = gather_context(tower, targets.encode_iter(tower, prefix_cache), [it, ia, ith, iah])
        out.x, out.y = cols[0], cols[1]
        if len(ith):
            out.xh, out.yh = cols[2], cols[3]
        return out
    ctx_t = flat([tower.to_context(h) for h in h_t])
    ctx_a = flat([tower.to_context(h) for h in h_a])
    out.x, out.y = take(ctx_t, it), take(ctx_a, ia)
    if len(ith):
        out.xh, out.yh = take(ctx_t, ith), take(ctx_a, iah)
    return out
