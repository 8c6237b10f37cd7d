"""The final stage: one edit ``P = A B`` (from the method) written into every cross-attention K/V site.

W = W_o + W_o A B, computed in float64 a block of rows at a time and written in the weights' dtype; the report
measures residuals on the weights as written:  ‖W X − W_o Y‖ / ‖W_o Y‖.

Rows of a K/V weight are independent, so each block of rows is read once and everything else is computed while
it is in cache: its float64 copy, the edit, the written rows, and the report's products (``W X``, ``W_o Y`` on
the report's columns, the preserve-sample drift), accumulated as squared norms. The only full-size allocation
is the written weight itself.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from erasepro_core.adapters import Adapter
from erasepro_core.methods import KVEdit
from erasepro_core.preserve import SiteStats

SITES_PER_STEP = 8  # progress is reported every this many K/V sites
MAX_REPORT_COLUMNS = 256  # residuals are measured on this many constrained columns at most (bounded cost)
# … and on this many extra (hardening, extra_context) and held-out columns at most: every one while they are
# few (a `last`-policy job's), evenly spaced ones past that (a `to_end` job has ~70 per prompt).
MAX_REPORT_EXTRA = 1024
MAX_REPORT_HELDOUT = 1024
# Rows of a K/V weight edited at once: a 640 × 768 float64 block is 3.9 MB (SD's widest K/V site, 1280 rows,
# takes two); fewer, larger blocks keep the per-call overhead of a multi-threaded BLAS low.
ROW_BLOCK = 640
# ‖W_o C_s‖² per K/V site (the drift report's denominator, a d_out × d × 128 product per site) depends only on
# the base weights and the preserve sample: kept for this many sites (a worker edits the same bases again).
_DRIFT_BASE: OrderedDict[tuple, float] = OrderedDict()
_DRIFT_BASE_KEPT = 4 * 128


def spaced(n: int, most: int) -> torch.Tensor:
    """Every index below n while n ≤ ``most``, else ``most`` evenly spaced ones (first and last included)."""
    return torch.arange(n) if n <= most else torch.linspace(0, n - 1, most).round().long()


def report_columns(n: int, n_extra: int) -> torch.Tensor:
    """Indices of the columns the report measures: ≤ MAX_REPORT_COLUMNS of the n pairs, evenly spaced, then
    ≤ MAX_REPORT_EXTRA of the extra columns (they follow the pairs)."""
    return torch.cat([spaced(n, MAX_REPORT_COLUMNS), n + spaced(n_extra, MAX_REPORT_EXTRA)])


@dataclass
class KVResult:
    sites: list[dict[str, Any]] = field(default_factory=list)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    originals: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class _Factors:
    """What every site's rows are multiplied by, on one device.

    ``first``/``second``: Δ = (W_o first) second, or Δ = W_o first when ``second`` is None (P formed).
    ``x_t``/``y_t``: the report's columns (constrained, then held-out) as rows, float32: ``rows @ x_t.T`` is the
    fast layout for a few columns. ``b_drift``: Δ C_s = (W_o first) b_drift; ``drift``: C_s (float32).
    """

    first: torch.Tensor
    second: torch.Tensor | None
    x_t: torch.Tensor
    y_t: torch.Tensor
    b_drift: torch.Tensor | None
    drift: torch.Tensor | None

    def to(self, device: torch.device) -> _Factors:
        return _Factors(*(t.to(device) if t is not None else None for t in (
            self.first, self.second, self.x_t, self.y_t, self.b_drift, self.drift)))


def write_kv(adapter: Adapter, edit: KVEdit, x: torch.Tensor, y: torch.Tensor, xh: torch.Tensor | None,
             yh: torch.Tensor | None, preserve: SiteStats | None, step: Callable[[str], None],
             n_extra: int = 0) -> KVResult:
    """New K/V weights and their per-site report. ``x``/``y`` are the constrained columns (any float dtype), of
    which the last ``n_extra`` came from ``extra_context`` (reported separately as ``extra_residual``)."""
    a, b, rank = edit.a, edit.b, edit.rank
    # Report inputs in float32: the residuals are measured on the weights as written, on at most
    # MAX_REPORT_COLUMNS evenly spaced constrained columns (a report, not the solve; all extra columns kept).
    keep = report_columns(x.shape[1] - n_extra, n_extra).to(x.device)
    m, m_extra = keep.numel(), min(n_extra, MAX_REPORT_EXTRA)
    xs, ys = [x[:, keep]], [y[:, keep]]
    if xh is not None and yh is not None:
        held = spaced(xh.shape[1], MAX_REPORT_HELDOUT).to(xh.device)
        xs.append(xh[:, held])
        ys.append(yh[:, held])
    x_t = torch.cat([t.float() for t in xs], 1).T.contiguous()
    y_t = torch.cat([t.float() for t in ys], 1).T.contiguous()
    drift = preserve.sample if preserve is not None and preserve.n else None
    # Δ_W = W_o A B with A B = P: two thin products (2·d_out·d·n flops per site) while that is cheaper than
    # W_o P (d_out·d²), i.e. while 2n < d; else P itself, formed once.
    low_rank = 2 * a.shape[1] < a.shape[0]
    first, second = (a, b) if low_rank else (a @ b, None)
    b_drift = None
    if drift is not None:  # Δ C_s = (W_o A)(B C_s), or (W_o P) C_s when P is formed
        b_drift = b @ drift.double() if low_rank else drift.double()
    factors = _Factors(first, second, x_t, y_t, b_drift, drift.float() if drift is not None else None)
    sample_id = _digest(drift) if drift is not None else ""
    on: dict[torch.device, _Factors] = {}
    out = KVResult()
    for k, site in enumerate(adapter.kv_sites):
        w = site.module.weight.detach()
        if w.device not in on:  # moved once per device (every site of a pipeline is normally on one)
            on[w.device] = factors.to(w.device)
        new, sq = _edit_site(w, on[w.device], site.key, sample_id)
        out.tensors[site.key], out.originals[site.key] = new, w  # moved to the host once, by the caller
        # Squared norms per report column: the constrained ones (the last n_extra of them extra), then held-out.
        r_sq, t_sq = sq["residual"], sq["target"]
        report: dict[str, Any] = {
            "site": site.key, "stage": "final", "n_columns": x.shape[1], "rank": rank,
            "residual": _ratio(r_sq[:m].sum(), t_sq[:m].sum()),
            "update_norm": _ratio(sq["update"], sq["weight"]),
        }
        if n_extra:
            report["extra_residual"] = _ratio(r_sq[m - m_extra : m].sum(), t_sq[m - m_extra : m].sum())
        if len(xs) > 1:
            report["heldout_residual"] = _ratio(r_sq[m:].sum(), t_sq[m:].sum())
        if drift is not None:
            report["preserve_drift"] = _ratio(sq["drift"], sq["drift_base"])
        out.sites.append(report)
        if (k + 1) % SITES_PER_STEP == 0:
            step("final")
    return out


def _ratio(num_sq: float | torch.Tensor, den_sq: float | torch.Tensor) -> float:
    """‖num‖/‖den‖ from squared norms, as :func:`~erasepro_core.solver.relative` (0 when both vanish)."""
    num_sq, den_sq = float(num_sq), float(den_sq)
    if den_sq > 0:
        return (num_sq / den_sq) ** 0.5
    return 0.0 if num_sq == 0 else float("inf")


def _sq(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t)) ** 2


def _digest(t: torch.Tensor) -> str:
    c = t.detach().cpu().contiguous()
    return hashlib.sha256(c.view(torch.uint8).numpy()).hexdigest() if c.numel() else ""


def _edit_site(w: torch.Tensor, f: _Factors, key: str, sample_id: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """The edited weight (``w``'s dtype) and the squared norms the report needs: per report column
    ‖(W X − W_o Y)_j‖² and ‖(W_o Y)_j‖² (float64 vectors), ‖W − W_o‖², ‖W_o‖², ‖Δ C_s‖² and ‖W_o C_s‖²."""
    new = torch.empty_like(w)
    n_cols = f.x_t.shape[0]
    sq: dict[str, Any] = {"residual": torch.zeros(n_cols, dtype=torch.float64),
                          "target": torch.zeros(n_cols, dtype=torch.float64),
                          "update": 0.0, "weight": 0.0, "weight_sum": 0.0, "drift": 0.0}
    for r0 in range(0, w.shape[0], ROW_BLOCK):
        rows = w[r0 : r0 + ROW_BLOCK]
        blk = rows.double()
        wa = blk @ f.first
        if f.b_drift is not None:
            sq["drift"] += _sq(wa @ f.b_drift)
        if f.second is None:
            blk += wa
        else:
            blk.addmm_(wa, f.second)
        dst = new[r0 : r0 + ROW_BLOCK]
        dst.copy_(blk)
        rows32, dst32 = rows.float(), dst.float()
        target = rows32 @ f.y_t.T
        sq["residual"] += ((dst32 @ f.x_t.T - target).double() ** 2).sum(0).cpu()
        sq["target"] += (target.double() ** 2).sum(0).cpu()
        sq["update"] += _sq(dst32 - rows32)
        sq["weight"] += _sq(rows32)
        sq["weight_sum"] += float(rows32.sum())
    if f.drift is not None:
        sq["drift_base"] = _drift_base(w, f.drift, key, sample_id, sq["weight"], sq["weight_sum"])
    return new, sq


def _drift_base(w: torch.Tensor, drift: torch.Tensor, key: str, sample_id: str, w_sq: float, w_sum: float) -> float:
    """‖W_o C_s‖², cached under the site, its shape/dtype/device, ‖W_o‖², ΣW_o (computed anyway, so a changed
    weight is a new entry) and the sample's digest."""
    ck = (key, tuple(w.shape), str(w.dtype), str(w.device), w_sq, w_sum, sample_id)
    if ck in _DRIFT_BASE:
        _DRIFT_BASE.move_to_end(ck)
        return _DRIFT_BASE[ck]
    value = sum(_sq(w[r0 : r0 + ROW_BLOCK].float() @ drift) for r0 in range(0, w.shape[0], ROW_BLOCK))
    _DRIFT_BASE[ck] = value
    while len(_DRIFT_BASE) > _DRIFT_BASE_KEPT:
        _DRIFT_BASE.popitem(last=False)
    return value
