"""The image-judge evaluation job: draw the same prompts and seeds from the base model and the erased one, read
every image with NudeNet or CLIP, keep the images beside the checkpoint and the rates in its manifest.

Run by ``worker.evaluate.run_evaluation`` when the API chose an image judge (the erasure's preset's, or the one
asked for). The entry it appends to ``manifest.json``'s ``evaluations`` says which judge, with which sample size,
and holds every prompt's verdicts; its images are ``evaluations/<id>/p<i>-<before|after>-<k>.png``.
"""

from __future__ import annotations

import io
import time
from typing import Any

from erasepro_jobs.evaluations import image_key, image_name, image_prefix, summary_of
from worker.evaluate import record_evaluation
from worker.runner import JobContext, JobFailed, interruptible, open_erasure, run_job
from worker.runtime import get_state


def run_judged_evaluation(*, job_id: str, tenant: str, erasure_id: str, judge: str, items: list[dict[str, str]],
                          samples: int, seed: int, targets: list[str], steps: int,
                          created_at: float | None = None) -> dict[str, Any] | None:
    """Judge erasure ``erasure_id`` before/after on ``items`` (prompt, target, anchor) with ``samples`` images each."""
    state = get_state()
    ctx = JobContext(state, job_id, tenant, "evaluation", {"erasure_id": erasure_id})

    def body() -> dict[str, Any]:
        from erasepro_core.judges import JudgeUnavailable, load_judge
        from erasepro_core.judges.evaluate import judge_erasure

        t_start = time.time()
        try:
            reader = load_judge(judge)
        except JudgeUnavailable as exc:  # the API checked; this worker may lack the package or folder
            raise JobFailed(str(exc)) from None
        erasure = open_erasure(state, ctx, tenant, erasure_id)
        with interruptible(state):
            report, images = judge_erasure(erasure.loaded.pipe, erasure.delta, items, reader, samples=samples,
                                           seed=seed, steps=steps,
                                           progress=lambda s, f: ctx.progress(s, 0.02 + 0.9 * f))
        ctx.progress("saving", 0.95)
        for i, (before, after) in enumerate(images):
            for side, ims in (("before", before), ("after", after)):
                for k, im in enumerate(ims):
                    buf = io.BytesIO()
                    im.save(buf, format="PNG")
                    state.storage.put_bytes(image_key(tenant, erasure_id, job_id, image_name(i, side, k)),
                                            buf.getvalue())
        try:
            entry, dropped = record_evaluation(state, tenant, erasure_id, job_id, t_start, created_at, {
                "targets": targets, "judge": judge, "budgets": {}, "seed": seed, "steps": steps,
                "samples": samples, "report": report})
        except JobFailed:  # the checkpoint went meanwhile: so do this evaluation's images
            state.storage.delete_prefix(image_prefix(tenant, erasure_id, job_id))
            raise
        for old in dropped:  # dropped from the manifest: their images go too
            state.storage.delete_prefix(image_prefix(tenant, erasure_id, str(old.get("id"))))
        outcome = ctx.finish("succeeded", result=summary_of(entry), progress={"stage": "done", "fraction": 1.0})
        return {"status": "succeeded" if outcome == "ok" else outcome, "before": report["before"],
                "after": report["after"]}

    return run_job(ctx, body)
