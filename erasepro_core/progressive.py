"""The progressive stage: targets carried through a text tower as its fc2 layers are edited, shallow → deep.

Layer i of the plan:  Δ_i X_i = β_i (H_anchor,i − H_target,i)  on fc2, zero residual under the preserve metric;
the targets' states then continue through the *edited* layer, so deeper layers see what the model will see.
With no progressive layers the same pass just encodes targets and anchors (context columns for the K/V stage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from erasepro_core.adapters import TextTower
from erasepro_core.features import PairSet
from erasepro_core.plan import Plan, schedule_fractions
from erasepro_core.preserve import PreserveStats
from erasepro_core.solver import Metric, constraint_map, relative

MetricFor = Callable[[tuple, Any, int], Metric]  # (site, stats, d_in) -> the cached metric


class Ragged:
    """Prompts grouped by token length, so each group is encoded without padding (CLIP is causal: states up to
    EOS do not depend on what follows). Columns are gathered by (row, position) across groups."""

    def __init__(self, tower: TextTower, rows: list[list[int]], length: int | None) -> None:
        by_len: dict[int, list[int]] = {}
        for r, ids in enumerate(rows):
            by_len.setdefault(length or len(ids), []).append(r)
        self.groups = [(n, idx) for n, idx in sorted(by_len.items())]
        self.ids = [tower.pad([rows[r] for r in idx], n) for n, idx in self.groups]
        self._where: dict[int, tuple[int, int]] = {}
        offset = 0
        self._offsets = []
        for g, (n, idx) in enumerate(self.groups):
            self._offsets.append(offset)
            for j, r in enumerate(idx):
                self._where[r] = (g, j)
            offset += n * len(idx)

    def index(self, rows: list[int], pos: list[int]) -> torch.Tensor:
        flat = []
        for r, p in zip(rows, pos, strict=True):
            g, j = self._where[r]
            flat.append(self._offsets[g] + j * self.groups[g][0] + p)
        return torch.tensor(flat, dtype=torch.long)

    @staticmethod
    def flat(states: list[torch.Tensor]) -> torch.Tensor:
        """All groups' states as one (tokens × d) matrix, to gather columns from with :meth:`index`."""
        return torch.cat([s.reshape(-1, s.shape[-1]) for s in states])


def take(flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Columns (d × n) of flattened states at a precomputed ``index``."""
    return flat[index.to(flat.device)].T


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
                metric_for: MetricFor, step: Callable[[str], None]) -> TowerPass:
    """One pass: anchors through the original tower, targets carried through the tower as it is edited."""
    n_max = int(tower.tokenizer.model_max_length)
    to_end = plan.token_policy == "to_end"
    nt, na = len(pairs.target_ids), len(pairs.anchor_ids)
    targets = Ragged(tower, pairs.target_ids + held.target_ids, n_max if to_end else None)
    anchors = Ragged(tower, pairs.anchor_ids + held.anchor_ids, n_max if to_end else None)
    it = targets.index(*_split(pairs.positions, 0))
    ia = anchors.index(*_split(pairs.positions, 2))
    ith = targets.index([r + nt for r in _split(held.positions, 0)[0]], _split(held.positions, 0)[1])
    iah = anchors.index([r + na for r in _split(held.positions, 2)[0]], _split(held.positions, 2)[1])
    flat = Ragged.flat
    layers = plan.layers[ti]

    h_a = [tower.embed(ids) for ids in anchors.ids]
    h_t = [tower.embed(ids) for ids in targets.ids]
    betas = dict(zip(layers, schedule_fractions(plan.schedule, len(layers)), strict=True))
    out = TowerPass(x=torch.empty(0), y=torch.empty(0), xh=None, yh=None)
    for i in range(tower.n_context_layers):
        h_a = [tower.layer(i, h)[0] for h in h_a]
        outs = [tower.layer(i, h) for h in h_t]
        h_out, xin = [o[0] for o in outs], [o[1] for o in outs]
        if i not in betas:
            h_t = h_out
            continue
        beta = betas[i]
        f_in, f_a, f_out = flat(xin), flat(h_a), flat(h_out)  # flattened once per layer, gathered often
        x = take(f_in, it).double()
        anchor = take(f_a, ia).double()
        gap = anchor - take(f_out, it).double()
        r = beta * gap
        stats = pres.fc2.get((ti, i))
        g, rank = constraint_map(x, metric_for((ti, i), stats, x.shape[0]))
        w = tower.fc2(i).weight.detach()
        new = (w.double() + r @ g).to(w.dtype)
        applied = (new.double() - w.double())  # what the written weights actually change
        delta = applied.to(w.dtype).T
        h_t = [o + xi @ delta for o, xi in zip(h_out, xin, strict=True)]
        key = tower.fc2_name(i)
        out.tensors[key], out.originals[key] = new.cpu(), w.cpu()
        site: dict[str, Any] = {
            "site": key, "stage": "progressive", "tower": tower.component, "depth": i, "beta": round(beta, 6),
            "n_columns": x.shape[1], "rank": rank,
            "residual": relative(applied @ x - r, r),
            "gap_before": relative(gap, anchor),
            "gap_after": relative(anchor - take(flat(h_t), it).double(), anchor),
            "update_norm": relative(applied, w),
        }
        if len(ith):
            xh = take(f_in, ith).double()
            rh = beta * (take(f_a, iah) - take(f_out, ith)).double()
            site["heldout_residual"] = relative(applied @ xh - rh, rh)
        if stats is not None and stats.n:  # Δ C_s = R (G C_s): rank n, cheap
            site["preserve_drift"] = relative(r @ (g @ stats.sample.double()), w.float() @ stats.sample)
        out.sites.append(site)
        step("progressive")
    ctx_t = flat([tower.to_context(h) for h in h_t])
    ctx_a = flat([tower.to_context(h) for h in h_a])
    out.x, out.y = take(ctx_t, it), take(ctx_a, ia)
    if len(ith):
        out.xh, out.yh = take(ctx_t, ith), take(ctx_a, iah)
    return out
