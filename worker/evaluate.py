"""The evaluation job: attack a finished erasure and attach the numbers to its manifest (durably).

``run_evaluation`` loads the erasure's base model and delta, runs the chosen attacks at the chosen budgets (and
the efficacy per prompt set) with the shipped judge, and appends the result to ``evaluations`` in the erasure's
``manifest.json`` under the manifest lock (the newest :data:`MAX_KEPT` are kept), then records the job's outcome
through the lifecycle module (``evaluation.succeeded|failed|cancelled`` on the erasure's event log).
"""

from __future__ import annotations

import socket
import time
from typing import Any

from erasepro_jobs import store
from erasepro_jobs.evaluations import MAX_KEPT, judge_problem, summary_of
from worker.runner import JobContext, JobFailed, interruptible, manifest_lock, open_erasure, run_job
from worker.runtime import WorkerState, get_state

MARGIN_S = 0.9  # share of the job's time bound the attacks may spend (the rest: loading, efficacy, saving)


def run_evaluation(*, job_id: str, tenant: str, erasure_id: str, budgets: dict[str, int], seed: int,
                   targets: list[str], timeout_s: int, steps: int = 25,
                   created_at: float | None = None, judge: str = "shapes", items: list[dict[str, str]] | None = None,
                   samples: int = 2, threat: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Evaluate erasure ``erasure_id``: ASR per attack at ``budgets`` and efficacy per prompt set, per target; with
    an image judge (``nudenet``, ``clip``), before/after images of ``items`` instead (:mod:`worker.judged`); with
    ``threat``, T1 and T2 attack success apart (:mod:`worker.threat`)."""
    if threat is not None:
        from worker.threat import run_threat_evaluation

        return run_threat_evaluation(job_id=job_id, tenant=tenant, erasure_id=erasure_id, threat=threat,
                                     budgets=budgets, seed=seed, targets=targets, steps=steps, timeout_s=timeout_s,
                                     created_at=created_at)
    if items is not None:
        from worker.judged import run_judged_evaluation

        return run_judged_evaluation(job_id=job_id, tenant=tenant, erasure_id=erasure_id, judge=judge, items=items,
                                     samples=samples, seed=seed, targets=targets, steps=steps,
                                     created_at=created_at)
    state = get_state()
    ctx = JobContext(state, job_id, tenant, "evaluation", {"erasure_id": erasure_id})

    def body() -> dict[str, Any]:
        from erasepro_core.attacks import Sampling
        from erasepro_core.shapes.robustness import evaluate_shapes_erasure

        t_start = time.time()
        erasure = open_erasure(state, ctx, tenant, erasure_id,
                               check=lambda info: judge_problem(info.source, info.name, targets))
        # each attack call stops itself at its share of the time bound rather than be killed by RQ
        per_call = max(1.0, MARGIN_S * timeout_s / max(1, len(targets) * len(budgets)))
        with interruptible(state):
            result = evaluate_shapes_erasure(erasure.loaded.pipe, erasure.delta, targets, budgets, seed,
                                             Sampling(steps=steps, max_seconds=per_call),
                                             progress=lambda s, f: ctx.progress(s, 0.02 + 0.95 * f))
        ctx.progress("saving", 0.98)
        entry, _ = record_evaluation(state, tenant, erasure_id, job_id, t_start, created_at, {
            "targets": targets, "budgets": budgets, "seed": seed, "steps": steps, "asr": result["asr"],
            "efficacy": result["efficacy"], "attacks": result["attacks"]})
        outcome = ctx.finish("succeeded", result=summary_of(entry), progress={"stage": "done", "fraction": 1.0})
        return {"status": "succeeded" if outcome == "ok" else outcome, "asr": result["asr"]}

    return run_job(ctx, body)


def record_evaluation(state: WorkerState, tenant: str, erasure_id: str, job_id: str, t_start: float,
                      created_at: float | None, fields: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Add a succeeded evaluation's entry (``fields`` + id, status, times, worker) to the erasure's manifest, which
    keeps the last ``MAX_KEPT``: the entry and the older entries that fell out. JobFailed if the checkpoint is gone."""
    entry = {"id": job_id, "status": "succeeded", "erasure_id": erasure_id, **fields,
             "created_at": float(created_at or t_start), "started_at": t_start, "finished_at": store.now(),
             "seconds": round(time.time() - t_start, 2), "worker": state.name, "host": socket.gethostname()}
    with manifest_lock(state, erasure_id):
        current = store.read_manifest(state.storage, tenant, erasure_id)
        if current is None:
            raise JobFailed(f"checkpoint {erasure_id} was deleted during the evaluation")
        kept = [e for e in current.get("evaluations", []) if e.get("id") != job_id]
        current["evaluations"] = [*kept, entry][-MAX_KEPT:]
        store.write_manifest(state.storage, tenant, erasure_id, current)
    return entry, kept[:max(0, len(kept) + 1 - MAX_KEPT)]
