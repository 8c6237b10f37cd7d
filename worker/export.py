"""The export job: the checkpoint as a diffusers folder or an exact LoRA, archived beside the delta."""

from __future__ import annotations

import tarfile
from typing import Any

from erasepro_jobs import store
from erasepro_jobs.storage.base import sha256_file
from worker.runner import (
    JobContext,
    JobFailed,
    checkpoint_delta,
    interruptible,
    load_checkpoint,
    manifest_lock,
    model_info,
    run_job,
)
from worker.runtime import get_state


def run_export(*, job_id: str, tenant: str, erasure_id: str, format: str = "diffusers") -> dict[str, Any] | None:
    """Write the checkpoint as ``format`` (the full edited pipeline, ``pipeline.tar``; or an exact LoRA,
    ``lora.tar``/``kohya.tar``), with a model card, beside the delta, and add it to the manifest."""
    state = get_state()
    ctx = JobContext(state, job_id, tenant, "export", {"erasure_id": erasure_id})
    fmt = format

    def body() -> dict[str, Any]:
        from erasepro_core.formats import FormatError
        from erasepro_core.lora import export_checkpoint

        if fmt not in store.EXPORT_FILES:
            raise JobFailed(f"unknown export format {fmt!r}")
        name = store.EXPORT_FILES[fmt]
        manifest = load_checkpoint(state, tenant, erasure_id)
        if name in manifest.get("files", {}):
            ctx.finish("succeeded")
            return {"status": "succeeded"}
        info = model_info(state, manifest["base_model"]["name"])
        loaded = state.cache.get(info)
        delta = checkpoint_delta(state, tenant, erasure_id, manifest)
        ctx.progress("exporting", 0.1)
        storage = state.storage
        tar_key = store.checkpoint_key(tenant, erasure_id, name)
        evaluation = (manifest.get("evaluations") or [None])[-1]  # the latest, for the model card
        with storage.scratch(store.checkpoint_prefix(tenant, erasure_id), f"{job_id}-export") as tmpdir:
            try:
                with interruptible(state):
                    # export_checkpoint leaves the cached pipeline as it found it (diffusers: applied_delta)
                    export_checkpoint(loaded.pipe, delta, tmpdir / "pipeline", fmt, evaluation=evaluation)
            except FormatError as exc:  # the API refuses these at the door; a job queued by hand still fails cleanly
                raise JobFailed(str(exc)) from exc
            except BaseException:
                state.cache.evict(info)
                raise
            ctx.progress("archiving", 0.7)
            tar_path = tmpdir / name
            arcname = f"erasepro-{erasure_id}" + ("" if fmt == "diffusers" else f"-{fmt}")
            with tarfile.open(tar_path, "w") as tar:
                tar.add(tmpdir / "pipeline", arcname=arcname)
            entry = {"sha256": sha256_file(tar_path), "size": tar_path.stat().st_size}
            # put before the lock (an upload may take minutes; no manifest names it yet, so nobody serves it)
            storage.put_file(tar_key, tar_path, move=True, sha256=entry["sha256"])
        with manifest_lock(state, erasure_id):
            current = store.read_manifest(storage, tenant, erasure_id)
            if current is None:  # deleted meanwhile (the delete may have run before our put): leave nothing
                storage.delete(tar_key)
                raise JobFailed(f"checkpoint {erasure_id} was deleted during the export")
            current.setdefault("files", {})[name] = entry
            current["exported_at"] = store.now()
            store.write_manifest(storage, tenant, erasure_id, current)
        ctx.finish("succeeded", progress={"stage": "done", "fraction": 1.0})
        return {"status": "succeeded", **entry}

    return run_job(ctx, body)
