"""The generation job: sample images from a base model, with an erasure's delta applied when one is named."""

from __future__ import annotations

import base64
import io
import logging
import time
from typing import Any

from erasepro_jobs import store
from worker.guard import guard_verdict
from worker.runner import JobContext, checkpoint_delta, interruptible, load_checkpoint, model_info, run_job
from worker.runtime import get_state

log = logging.getLogger("erasepro.worker")


def run_generation(*, job_id: str, tenant: str, base_model: str, erasure_id: str | None,
                   params: dict[str, Any]) -> dict[str, Any] | None:
    """Sample images from a base model, with an erasure's delta applied when ``erasure_id`` is given."""
    state = get_state()
    ctx = JobContext(state, job_id, tenant, "generation", {"base_model": base_model, "erasure_id": erasure_id or ""})

    def body() -> dict[str, Any]:
        from erasepro_core.delta import applied_delta
        from erasepro_core.pipeline import generate

        timings: dict[str, Any] = {}
        t0 = time.perf_counter()
        info = model_info(state, base_model)
        loaded = state.cache.get(info)
        timings.update(load_s=round(loaded.load_s, 4), model_cached=loaded.hit, device=loaded.device)
        kwargs = {k: params[k] for k in ("negative_prompt", "seed", "steps", "guidance", "width", "height",
                                         "num_images") if k in params}
        t1 = time.perf_counter()
        guard_view = None
        if erasure_id:
            manifest = load_checkpoint(state, tenant, erasure_id)
            checked = guard_verdict(state, tenant, erasure_id, manifest, loaded.pipe, params["prompt"])
            if checked is not None:
                guard, verdict = checked
                guard_view = {**verdict.as_dict(), "mode": guard.mode}
                if verdict.flagged:
                    log.warning("generation %s: prompt guard of erasure %s flagged the prompt (%s, mode %s)",
                                job_id, erasure_id, verdict.reason(), guard.mode)
                if verdict.flagged and guard.mode == "refuse":
                    ctx.finish("failed", error=f"refused by the erasure's prompt guard: {verdict.reason()}",
                               guard=guard_view)
                    return {"status": "refused", "guard": guard_view}
            delta = checkpoint_delta(state, tenant, erasure_id, manifest)
            try:
                with interruptible(state), applied_delta(loaded.pipe, delta):
                    images = generate(loaded.pipe, params["prompt"], **kwargs)
            except BaseException:
                state.cache.evict(info)  # the restore may not have run to completion
                raise
        else:
            with interruptible(state):  # DELETE /v1/generations/{id} stops it mid-sampling
                images = generate(loaded.pipe, params["prompt"], **kwargs)
        ctx.check_cancel()
        timings["generate_s"] = round(time.perf_counter() - t1, 4)
        encoded = []
        for img in images:
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            encoded.append(base64.b64encode(buf.getvalue()).decode("ascii"))
        timings["total_s"] = round(time.perf_counter() - t0, 4)
        key = store.k_images(job_id)
        with state.r.pipeline(transaction=True) as p:
            p.delete(key)
            p.rpush(key, *encoded)
            p.expire(key, state.settings.result_ttl_s)
            p.execute()
        outcome = ctx.finish("succeeded", timings=timings, **({"guard": guard_view} if guard_view else {}))
        return {"status": "succeeded" if outcome == "ok" else outcome, "timings": timings}

    return run_job(ctx, body)
