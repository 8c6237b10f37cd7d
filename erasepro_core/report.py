"""The job report: per-site residuals and a summary a person (and the API) reads."""

from __future__ import annotations

from typing import Any

from erasepro_core.adapters import Adapter
from erasepro_core.features import PairSet
from erasepro_core.plan import Plan


def _mean(vals: list[float]) -> float | None:
    return sum(vals) / len(vals) if vals else None


def summary(plan: Plan, adapter: Adapter, pairs: PairSet, held: PairSet, sites: list[dict[str, Any]],
            warnings: list[str], n_extra: int = 0) -> dict[str, Any]:
    final = [s for s in sites if s["stage"] == "final"]
    out: dict[str, Any] = {
        "method": plan.method.name,
        **plan.method.summary(),
        "family": adapter.family,
        "layers": {adapter.towers[t].component: ls for t, ls in plan.layers.items()},
        "n_edits": len(plan.spec.edits),
        "n_constraints": pairs.n_columns,
        "n_heldout": held.n_columns,
        "summary": {
            "max_residual": max(s["residual"] for s in sites),
            "kv_residual": _mean([s["residual"] for s in final]),
            "kv_heldout_residual": _mean([s["heldout_residual"] for s in final if "heldout_residual" in s]),
            "kv_preserve_drift": _mean([s["preserve_drift"] for s in final if "preserve_drift" in s]),
            "kv_update_norm": _mean([s["update_norm"] for s in final]),
            "progressive_update_norms": [round(s["update_norm"], 6) for s in sites if s["stage"] == "progressive"],
        },
        "sites": sites,
        "warnings": warnings,
    }
    if n_extra:
        out["n_extra_constraints"] = n_extra
        out["summary"]["kv_extra_residual"] = _mean([s["extra_residual"] for s in final])
    return out
