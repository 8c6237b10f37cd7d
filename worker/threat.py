"""The threat-model evaluation job: T1 and T2 attack success of a canvas erasure, reported apart, with sample sizes
and 95 % intervals (:mod:`erasepro_core.robust.threat`), kept in the erasure's manifest.

Run by ``worker.evaluate.run_evaluation`` when the request named ``threat_models`` (or asked nothing else of a
canvas erasure). The entry it appends to ``manifest.json``'s ``evaluations`` holds ``threat``: every row labelled
with its ``threat_model``, the pooled summary, the settings, whether the time bound cut it short, and what the
erasure's method (and prompt guard) defends against.
"""

from __future__ import annotations

import time
from typing import Any

from erasepro_jobs.evaluations import summary_of
from worker.evaluate import MARGIN_S, record_evaluation
from worker.runner import JobContext, interruptible, open_erasure, run_job
from worker.runtime import get_state


def run_threat_evaluation(*, job_id: str, tenant: str, erasure_id: str, threat: dict[str, Any],
                          budgets: dict[str, int], seed: int, targets: list[str], steps: int, timeout_s: int,
                          created_at: float | None = None) -> dict[str, Any] | None:
    """Evaluate erasure ``erasure_id`` under ``threat["threat_models"]`` (``per_category``, ``categories``,
    ``compare_unedited``; T2 ``budgets``), within :data:`worker.evaluate.MARGIN_S` of ``timeout_s``."""
    state = get_state()
    ctx = JobContext(state, job_id, tenant, "evaluation", {"erasure_id": erasure_id})

    def body() -> dict[str, Any]:
        from erasepro_core.robust.threat import defences, evaluate_threat_models
        from erasepro_jobs.evaluations import threat_problem
        from worker.guard import load_guard

        t_start = time.time()
        erasure = open_erasure(state, ctx, tenant, erasure_id, check=lambda info: threat_problem(info.name, targets))
        guard = load_guard(state, tenant, erasure_id, erasure.manifest)
        # what is left of the time bound after loading, less a margin for saving
        budget_s = max(1.0, MARGIN_S * timeout_s - (time.time() - t_start))
        with interruptible(state):
            result = evaluate_threat_models(
                erasure.loaded.pipe, erasure.delta, targets, threat_models=threat["threat_models"],
                per_category=int(threat["per_category"]), categories=threat.get("categories"), budgets=budgets,
                compare_unedited=bool(threat.get("compare_unedited", True)), seed=seed, steps=steps,
                max_seconds=budget_s, guard=guard, progress=lambda s, f: ctx.progress(s, 0.02 + 0.95 * f))
        result["defences"] = defences(erasure.manifest.get("spec") or {})
        ctx.progress("saving", 0.98)
        entry, _ = record_evaluation(state, tenant, erasure_id, job_id, t_start, created_at, {
            "targets": targets, "judge": "canvas", "budgets": budgets, "seed": seed, "steps": steps,
            "threat_models": threat["threat_models"], "threat": result})
        outcome = ctx.finish("succeeded", result=summary_of(entry), progress={"stage": "done", "fraction": 1.0})
        return {"status": "succeeded" if outcome == "ok" else outcome, "threat": result["summary"]}

    return run_job(ctx, body)
