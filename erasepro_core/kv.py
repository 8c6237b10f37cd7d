"""The final stage: one edit ``P = A B`` (from the method) written into every cross-attention K/V site.

W = W_o + W_o A B, computed in float64 and written in the weights' dtype; the report measures residuals on the
weights as written:  ‖W X − W_o Y‖ / ‖W_o Y‖.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from erasepro_core.adapters import Adapter
from erasepro_core.methods import KVEdit
from erasepro_core.preserve import SiteStats
from erasepro_core.solver import relative

SITES_PER_STEP = 8  # progress is reported every this many K/V sites
MAX_REPORT_COLUMNS = 256  # residuals are measured on this many constrained columns at most (bounded cost)


def report_columns(n: int, n_extra: int) -> torch.Tensor:
    """Indices of the columns the report measures: ≤ MAX_REPORT_COLUMNS of the n pairs, evenly spaced, then
    every extra column (they follow the pairs)."""
    pairs = torch.arange(n) if n <= MAX_REPORT_COLUMNS else torch.linspace(0, n - 1, MAX_REPORT_COLUMNS).round().long()
    return torch.cat([pairs, torch.arange(n, n + n_extra)])


@dataclass
class KVResult:
    sites: list[dict[str, Any]] = field(default_factory=list)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    originals: dict[str, torch.Tensor] = field(default_factory=dict)


def write_kv(adapter: Adapter, edit: KVEdit, x: torch.Tensor, y: torch.Tensor, xh: torch.Tensor | None,
             yh: torch.Tensor | None, preserve: SiteStats | None, step: Callable[[str], None],
             n_extra: int = 0) -> KVResult:
    """New K/V weights and their per-site report. ``x``/``y`` are the constrained columns (float64), of which
    the last ``n_extra`` came from ``extra_context`` (reported separately as ``extra_residual``)."""
    a, b, rank = edit.a, edit.b, edit.rank
    # Report inputs in float32: the residuals are measured on the weights as written, on at most
    # MAX_REPORT_COLUMNS evenly spaced constrained columns (a report, not the solve; all extra columns kept).
    keep = report_columns(x.shape[1] - n_extra, n_extra)
    keep = keep.to(x.device)
    x32, y32 = x[:, keep].float(), y[:, keep].float()
    xh32, yh32 = (xh.float(), yh.float()) if xh is not None else (None, None)
    drift = preserve.sample if preserve is not None and preserve.n else None
    # Δ_W = W_o A B with A B = P: two thin products (2·d_out·d·n flops per site) while that is cheaper than
    # W_o P (d_out·d²), i.e. while 2n < d; else P itself, formed once.
    low_rank = 2 * a.shape[1] < a.shape[0]
    p_full = None if low_rank else a @ b
    b_drift = None
    if drift is not None:
        b_drift = b @ drift.double() if low_rank else p_full @ drift.double()
    out = KVResult()
    for k, site in enumerate(adapter.kv_sites):
        w = site.module.weight.detach()
        w64 = w.double()
        wa = w64 @ (a if low_rank else p_full).to(w.device)
        delta = wa @ b.to(w.device) if low_rank else wa
        new = (w64 + delta).to(w.dtype)
        out.tensors[site.key], out.originals[site.key] = new, w  # moved to the host once, by the caller
        report = site_report(site.key, w.float(), new.float(), x32, y32, xh32, yh32, rank, n_extra)
        report["n_columns"] = x.shape[1]
        if drift is not None:
            report["preserve_drift"] = relative(wa @ b_drift.to(w.device), w.float() @ drift.to(w.device))
        out.sites.append(report)
        if (k + 1) % SITES_PER_STEP == 0:
            step("final")
    return out


def site_report(key: str, w_o: torch.Tensor, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                xh: torch.Tensor | None, yh: torch.Tensor | None, rank: int, n_extra: int = 0) -> dict[str, Any]:
    target = w_o @ y
    site: dict[str, Any] = {
        "site": key, "stage": "final", "n_columns": x.shape[1], "rank": rank,
        "residual": relative(w @ x - target, target),
        "update_norm": relative(w - w_o, w_o),
    }
    if n_extra:
        site["extra_residual"] = relative(w @ x[:, -n_extra:] - target[:, -n_extra:], target[:, -n_extra:])
    if xh is not None:
        th = w_o @ yh
        site["heldout_residual"] = relative(w @ xh - th, th)
    return site
