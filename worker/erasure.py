"""The erasure job: compute the delta, write ``delta.safetensors`` + ``manifest.json`` atomically, record it."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from erasepro_jobs import store
from erasepro_jobs.storage.base import sha256_file
from worker.guard import save_guard
from worker.runner import JobContext, interruptible, model_info, run_job
from worker.runtime import get_state

log = logging.getLogger("erasepro.worker")


def run_erasure(*, job_id: str, tenant: str, base_model: str, spec: dict[str, Any],
                created_at: float | None = None, metadata: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Compute the erasure, write ``delta.safetensors`` + ``manifest.json`` atomically, record the outcome."""
    state = get_state()
    ctx = JobContext(state, job_id, tenant, "erasure", {
        "base_model": base_model, "spec": spec, "method": spec.get("method", "erasepro"),
        "created_at": repr(created_at or store.now())})

    def body() -> dict[str, Any]:
        from erasepro_core import ErasureSpec, erase

        t_start = time.time()
        timings: dict[str, Any] = {"queue_wait_s": round(t_start - float(created_at), 4) if created_at else None}
        erasure_spec = ErasureSpec.model_validate(spec)
        ctx.progress("loading model", 0.0)
        info = model_info(state, base_model)
        loaded = state.cache.get(info)
        timings.update(load_s=round(loaded.load_s, 4), model_cached=loaded.hit, device=loaded.device)
        ctx.progress("solving", 0.05)

        def on_progress(stage: str, fraction: float) -> None:
            ctx.progress(stage, 0.05 + 0.9 * fraction)

        t0 = time.perf_counter()
        with interruptible(state):
            result = erase(loaded.pipe, erasure_spec, progress=on_progress, cache=state.feature_cache())
        timings["solve_s"] = round(time.perf_counter() - t0, 4)
        ctx.progress("saving", 0.95)
        t0 = time.perf_counter()
        storage = state.storage
        committed = False
        try:
            # built in a private scratch folder, then put: the delta first, the manifest last (the commit)
            with storage.scratch(store.checkpoint_prefix(tenant, job_id), job_id) as tmp:
                delta_path = tmp / store.DELTA_FILE
                result.delta.save(delta_path)
                entry = {"sha256": sha256_file(delta_path), "size": delta_path.stat().st_size}
                storage.put_file(store.checkpoint_key(tenant, job_id, store.DELTA_FILE), delta_path, move=True,
                                 sha256=entry["sha256"])
                files = {store.DELTA_FILE: entry}
                guard_info = None
                if erasure_spec.prompt_guard != "off":  # the guard's two files, beside the delta
                    files, guard_info = save_guard(state, loaded.pipe, erasure_spec, tenant, job_id, tmp, files)
            timings["save_s"] = round(time.perf_counter() - t0, 4)
            finished = store.now()
            manifest = {
                "format": store.MANIFEST_FORMAT, "id": job_id, "kind": "erasure", "tenant": tenant,
                "base_model": {"name": info.name, "ref": info.ref, "source": info.source, "family": info.family,
                               "dtype": loaded.dtype, "fingerprint": result.delta.fingerprint},
                "spec": erasure_spec.model_dump(mode="json"), "report": result.report, "metadata": metadata or {},
                "files": files, **({"guard": guard_info} if guard_info else {}),
                "created_at": float(created_at or t_start), "started_at": t_start, "finished_at": finished,
                "timings": timings, "worker": state.name, "host": socket.gethostname(), "device": loaded.device,
            }
            ctx.check_cancel()  # last chance before the checkpoint becomes visible
            committed = True  # from here on a failure may have left the manifest: remove it with the rest
            store.write_manifest(storage, tenant, job_id, manifest)
            outcome = ctx.finish("succeeded", report=result.report, timings=timings,
                                 progress={"stage": "done", "fraction": 1.0})
            if outcome == "missing":  # Redis lost the record (flushed mid-run): the manifest stands, and the
                # listing index must name it even if the API already rebuilt the index from storage before
                # this manifest existed (the rebuild merges, so this entry survives one in progress)
                state.r.zadd(store.k_index(tenant), {job_id: manifest["created_at"]}, nx=True)
            if outcome == "succeeded":  # another run of this job (a retry beside a starved one) finished first:
                return {"status": "succeeded"}  # its checkpoint is these same complete files; keep them
            if outcome not in ("ok", "missing"):
                store.delete_checkpoint(storage, tenant, job_id)
                if outcome == "cancel_requested":
                    ctx.finish("cancelled", error="cancelled while saving")
                    return {"status": "cancelled"}
                return {"status": outcome}
            return {"status": "succeeded", "sha256": entry["sha256"], "timings": timings}
        except BaseException:
            try:  # the delta (and, past the commit, the manifest) may be in the store: nothing partial stays
                store.delete_checkpoint(storage, tenant, job_id)
            except Exception as exc:  # the store is down: cleanup_stale removes it later (no manifest, no lease)
                log.warning("could not remove the partial checkpoint %s: %s (committed=%s)", job_id, exc, committed)
            raise

    return run_job(ctx, body)
