"""The job report: per-site residuals and a summary a person (and the API) reads."""

from __future__ import annotations

from typing import Any

from erasepro_core.plan import Plan


def _mean(vals: list[float]) -> float | None:
    return sum(vals) / len(vals) if vals else None


def summary(plan: Plan, family: str, layers: dict[str, list[int]], n_constraints: int, n_heldout: int,
            sites: list[dict[str, Any]], warnings: list[str], n_extra: int = 0) -> dict[str, Any]:
    """``layers``: progressive layers per tower component; ``n_constraints``/``n_heldout``: paired columns of
    every context space together."""
    final = [s for s in sites if s["stage"] == "final"]
    out: dict[str, Any] = {
        "method": plan.method.name,
        **plan.method.summary(),
        "family": family,
        "layers": layers,
        "n_edits": len(plan.spec.edits),
        "n_constraints": n_constraints,
        "n_heldout": n_heldout,
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
        # extra columns constrain the primary space only (FLUX's, SD-3's pooled sites have none)
        out["summary"]["kv_extra_residual"] = _mean([s["extra_residual"] for s in final if "extra_residual" in s])
    return out
