"""The progressive stage: targets carried through a text tower as its fc2 layers are edited, shallow → deep.

Layer i of the plan:  Δ_i X_i = β_i (H_anchor,i − H_target,i)  on fc2, zero residual under the preserve metric;
the targets' states then continue through the *edited* layer, so deeper layers see what the model will see.
With no progressive layers the same pass just encodes targets and anchors (context columns for the K/V stage).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from erasepro_core.adapters import TextTower
from erasepro_core.features import PairSet
from erasepro_core.kv import report_columns
from erasepro_core.plan import Plan, schedule_fractions
from erasepro_core.prefix import BlockGather, PrefixCache, batch_for, gather_context
from erasepro_core.preserve import PreserveStats
from erasepro_core.solver import Metric, in_dspace, relative, zero_residual_factors

MetricFor = Callable[[tuple, Any, int], Metric]  # (site, stats, d_in) -> the cached metric


def _split(positions: list[tuple[int, int, int, int]], at: int) -> tuple[list[int], list[int]]:
    return [p[at] for p in positions], [p[at + 1] for p in positions]


@dataclass
class TowerPass:
    """Context columns of constrained (``x``/``y``) and held-out (``xh``/``yh``) pairs, plus edited fc2 layers."""

    x: torch.Tensor
    y: torch.Tensor
    xh: torch.Tensor | None
    yh: torch.Tensor | None
    sites: list[dict[str, Any]] = field(default_factory=list)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    originals: dict[str, torch.Tensor] = field(default_factory=dict)


def carry_tower(ti: int, tower: TextTower, plan: Plan, pairs: PairSet, held: PairSet, pres: PreserveStats,
                metric_for: MetricFor, step: Callable[[str], None], prefix_cache: PrefixCache | None = None
                ) -> TowerPass:
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

    out = TowerPass(x=torch.empty(0), y=torch.empty(0), xh=None, yh=None)
    betas = dict(zip(layers, schedule_fractions(plan.schedule, len(layers)), strict=True))
    if layers:
        h_t, h_a = targets.embed(tower), anchors.embed(tower)
    g_t, g_a, g_th, g_ah = BlockGather(it), BlockGather(ia), BlockGather(ith), BlockGather(iah)
    for i in range(tower.n_context_layers if layers else 0):
        # Anchors (never edited): each block's output replaces its input as soon as it is computed.
        cols_a = _stream(anchors.layer_iter(tower, i, h_a), h_a, [g_a, g_ah] if i in betas else [])
        if i not in betas:
            _stream(targets.layer_iter(tower, i, h_t), h_t, [])
            continue
        beta = betas[i]
        # Pass 1: the paired columns of fc2's input and output, block by block; each block keeps only its
        # post-attention state (d wide), from which pass 2 reruns the MLP once the edit is known.
        resumes: list[torch.Tensor] = []
        x_rows, out_rows, xh_rows, outh_rows = _streamed_columns(
            targets.layer_iter(tower, i, h_t), h_t, resumes, [g_t, g_th])
        # Past n = d_in the solve reads only d_in × d_in moments: the columns stay in the model's dtype.
        wide = in_dspace(len(it), x_rows.shape[1])
        x = x_rows.T if wide else x_rows.T.double()
        anchor = cols_a[0].T.double()
        gap = anchor - out_rows.T.double()
        r = beta * gap
        stats = pres.fc2.get((ti, i))
        a, b, rank = zero_residual_factors(x, r, metric_for((ti, i), stats, x.shape[0]))
        w = tower.fc2(i).weight.detach()
        new = (w.double() + a @ b).to(w.dtype)
        applied = (new.double() - w.double())  # what the written weights actually change
        delta = applied.to(w.dtype).T
        # Pass 2: the targets' states through the edited layer, each block's MLP rerun from its resume state.
        after = _edited_pass(targets.resume_iter(tower, i, resumes), resumes, h_t, delta, g_t, out_rows)
        del resumes
        key = tower.fc2_name(i)
        out.tensors[key], out.originals[key] = new, w  # moved to the host once, by the caller
        cols = report_columns(x.shape[1], 0).to(x.device) if wide else slice(None)  # a bounded report
        site: dict[str, Any] = {
            "site": key, "stage": "progressive", "tower": tower.component, "depth": i, "beta": round(beta, 6),
            "n_columns": x.shape[1], "rank": rank,
            "residual": relative(applied @ x[:, cols].double() - r[:, cols], r[:, cols]),
            "gap_before": relative(gap, anchor),
            "gap_after": relative(anchor - after.T.double(), anchor),
            "update_norm": relative(applied, w),
        }
        if len(ith):
            xh = xh_rows.T.double()
            rh = beta * (cols_a[1].T - outh_rows.T).double()
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
    out.x, xh = gather_context(tower, _draining(h_t), [it, ith])
    out.y, yh = gather_context(tower, _draining(h_a), [ia, iah])
    if len(ith):
        out.xh, out.yh = xh, yh
    return out


def _draining(blocks: list[torch.Tensor]) -> Iterator[torch.Tensor]:
    """``blocks`` one at a time, each released from the list once it is handed out."""
    for b in range(len(blocks)):
        h, blocks[b] = blocks[b], blocks[b].new_empty(0)
        yield h


def _stream(layer: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], states: list[torch.Tensor],
            gathers: list[BlockGather]) -> list[torch.Tensor]:
    """Run a layer block by block, each block's output replacing its input in ``states`` as soon as it is
    computed (the layer reads block b's input only when it computes block b); returns the rows of the outputs
    that ``gathers`` ask for (n × d each). The fc2 inputs are dropped block by block."""
    outs: list[torch.Tensor | None] = [None] * len(gathers)
    start = 0
    for b, (h_out, _, _) in enumerate(layer):
        states[b] = h_out
        flat = h_out.reshape(-1, h_out.shape[-1])
        for k, g in enumerate(gathers):
            if outs[k] is None:
                outs[k] = flat.new_empty(len(g), flat.shape[1])
            g.into(outs[k], flat, start)
        start += flat.shape[0]
    return outs  # type: ignore[return-value]


def _edited_pass(layer: Iterator[tuple[torch.Tensor, torch.Tensor]], resumes: list[torch.Tensor],
                 states: list[torch.Tensor], delta: torch.Tensor, gather: BlockGather, like: torch.Tensor
                 ) -> torch.Tensor:
    """Pass 2 of an edited layer: each block's output through the written fc2 edit, h + x Δᵀ, into ``states``
    (its resume state released); returns the new states' rows ``gather`` asks for (n × d, ``like``'s dtype)."""
    rows = like.new_empty(like.shape)
    start = 0
    for b, (h_out, xin) in enumerate(layer):
        states[b] = h_out + xin @ delta
        resumes[b] = states[b]  # the post-attention state is no longer needed
        flat = states[b].reshape(-1, states[b].shape[-1])
        gather.into(rows, flat, start)
        start += flat.shape[0]
    return rows


def _streamed_columns(layer: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], states: list[torch.Tensor],
                      resumes: list[torch.Tensor], gathers: list[BlockGather]) -> list[torch.Tensor]:
    """Pass 1 of an edited layer: per gather, the fc2 inputs' rows and the outputs' rows it asks for (n × d_ff,
    n × d), block by block; each block's resume state is appended to ``resumes`` and its input released from
    ``states`` (pass 2 needs only the resume state)."""
    xs: list[torch.Tensor | None] = [None] * len(gathers)
    outs: list[torch.Tensor | None] = [None] * len(gathers)
    start = 0
    for b, (h_out, xin, resume) in enumerate(layer):
        resumes.append(resume)
        states[b] = resume
        f_in, f_out = xin.reshape(-1, xin.shape[-1]), h_out.reshape(-1, h_out.shape[-1])
        for k, g in enumerate(gathers):
            if xs[k] is None:
                xs[k] = f_in.new_empty(len(g), f_in.shape[1])
                outs[k] = f_out.new_empty(len(g), f_out.shape[1])
            g.into(xs[k], f_in, start)
            g.into(outs[k], f_out, start)
        start += f_in.shape[0]
    return [xs[0], outs[0], xs[1], outs[1]]  # type: ignore[list-item]
