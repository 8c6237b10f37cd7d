"""The RQ job functions (enqueued by name from the API): erasure, generation, diffusers export.

Every function takes JSON-able keyword arguments only (the queues use RQ's JSON serializer: no pickle), keeps
its Redis record current (status, progress, timings, error) and mirrors progress into the RQ job's meta.

Artifacts go through the artifact store (:mod:`erasepro_jobs.storage`: files or S3): each file is built in a
scratch folder and put atomically, ``manifest.json`` last; the record says ``succeeded`` only after the
manifest is stored. A crash at any point leaves either nothing the API serves, or a complete checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import shutil
import socket
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rq import get_current_job
from rq.timeouts import JobTimeoutException

from erasepro_jobs import memory, store
from erasepro_jobs.lifecycle import PROGRESS_EVENT_STEP, JobRef
from erasepro_jobs.registry import BaseModelInfo, ModelUnavailable
from erasepro_jobs.storage import FileStorage
from erasepro_jobs.storage.base import sha256_file
from worker.runtime import JobCancelled, WorkerState, get_state

log = logging.getLogger("erasepro.worker")

MAX_ERROR_CHARS = 2000


class JobFailed(Exception):
    """A job cannot run (unknown model, missing checkpoint...): recorded as its readable error."""


def readable(exc: BaseException) -> str:
    """One line a user can act on."""
    if isinstance(exc, JobTimeoutException):
        return f"timed out: {exc}"
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "out of memory" in text.lower():
        return f"out of memory on the worker ({text}); try fewer edits or a larger device"
    if isinstance(exc, JobFailed):
        return text
    return f"{name}: {text}"[:MAX_ERROR_CHARS] if text else name


class JobContext:
    """One job's record: start, progress (throttled), cancellation checks, finish."""

    def __init__(self, state: WorkerState, job_id: str, tenant: str, kind: str, initial: dict[str, Any]) -> None:
        self.state, self.job_id, self.tenant, self.kind = state, job_id, tenant, kind
        self.initial = initial
        self.ref = JobRef(job_id, kind, tenant, str(initial.get("erasure_id") or ""))
        self._last: tuple[str | None, float] = (None, -1.0)
        self._last_event: tuple[str | None, float] = (None, -1.0)
        self.stage = "queued"
        self.rq_job = get_current_job()

    def start(self) -> bool:
        """Take the job (queued -> running, lease set); False when it was cancelled or already handled."""
        s = self.state
        seen = s.lifecycle.start(self.ref, s.name, s.settings.lease_ttl_s, self.initial)
        if seen != "running":
            log.info("job %s is %s: skipped", self.job_id, seen)
            return False
        s.begin(self.job_id, float(self.rq_job.timeout) if self.rq_job is not None and self.rq_job.timeout else None)
        return True

    def progress(self, stage: str, fraction: float) -> None:
        """Record progress (when the stage or 1% changed) and stop here if cancellation was requested."""
        fraction = float(min(max(fraction, 0.0), 1.0))
        self.stage = stage
        last_stage, last_fraction = self._last
        if stage != last_stage or fraction - last_fraction >= 0.01 or fraction >= 1.0:
            self._last = (stage, fraction)
            value = {"stage": stage, "fraction": round(fraction, 4)}
            ev_stage, ev_fraction = self._last_event
            event = stage != ev_stage or fraction - ev_fraction >= PROGRESS_EVENT_STEP or fraction >= 1.0
            if event:
                self._last_event = (stage, fraction)
            self.state.lifecycle.progress(self.ref, value, event=event)
            if self.rq_job is not None:
                try:
                    self.rq_job.meta["progress"] = value
                    self.rq_job.save_meta()
                except Exception as exc:  # meta is a mirror; the record is authoritative
                    log.debug("save_meta: %s", exc)
        self.check_cancel()

    def check_cancel(self) -> None:
        if self.state.r.hget(store.k_job(self.job_id), "cancel_requested") == "1":
            raise JobCancelled()

    def finish(self, outcome: str, **fields: Any) -> str:
        """End the job; returns ``ok`` or why not (``cancel_requested`` or the status already recorded)."""
        return self.state.lifecycle.finish(self.ref, outcome, **fields)


def _model(state: WorkerState, name: str) -> BaseModelInfo:
    try:
        return state.registry.require(name)
    except ModelUnavailable as exc:
        raise JobFailed(f"{exc} (this worker's registry: ERASEPRO_BASE_MODELS)") from None


@contextmanager
def _interruptible(state: WorkerState) -> Iterator[None]:
    """A job's heavy part: cancellable at once, and under the job's memory limit (``ERASEPRO_JOB_MEMORY`` above
    the process's address space when it starts: a failed allocation fails this job, nothing else)."""
    with state.interruptible_section(), memory.job_memory_limit(state.settings.job_memory,
                                                                             state.settings.job_memory_slack):
        yield


def memory_error(state: WorkerState, stage: str) -> str:
    """The error of a job stopped by its memory limit (no allocator internals: those go to the log)."""
    return (f"out of memory while {stage}: the job needed more than this worker's per-job limit of "
            f"{memory.format_bytes(state.settings.job_memory)} (ERASEPRO_JOB_MEMORY); the server's estimate was "
            "lower, so please report it, and split the job (fewer edits, templates, preserve prompts or images)")


def _run(ctx: JobContext, body: Any) -> dict[str, Any] | None:
    """Run ``body()`` inside the job's bookkeeping: outcomes, readable errors, cleanup, re-raise for RQ."""
    state = ctx.state
    if not ctx.start():
        return None
    try:
        return body()
    except JobCancelled:
        state.reset_after_interrupt()
        outcome = ctx.finish("cancelled", error=f"cancelled while {ctx.stage}")
        log.info("job %s cancelled (%s)", ctx.job_id, outcome)
        return {"status": "cancelled"}
    except JobTimeoutException as exc:
        state.reset_after_interrupt()
        ctx.finish("failed", error=f"timed out while {ctx.stage}: {exc}")
        raise
    except Exception as exc:
        log.exception("job %s failed", ctx.job_id)
        if memory.is_allocation_failure(exc):
            state.reset_after_interrupt()  # a refused allocation may have left a cache half-built
            ctx.finish("failed", error=memory_error(state, ctx.stage))
        else:
            ctx.finish("failed", error=readable(exc))
        raise
    except BaseException:  # cold shutdown (SystemExit) or Ctrl-C: say so rather than leave it 'running'
        state.reset_after_interrupt()
        ctx.finish("failed", error=f"the worker shut down while {ctx.stage}; submit the job again")
        raise
    finally:
        state.end()


# ----------------------------------------------------------------------------------------------- erasure
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
        info = _model(state, base_model)
        loaded = state.cache.get(info)
        timings.update(load_s=round(loaded.load_s, 4), model_cached=loaded.hit, device=loaded.device)
        ctx.progress("solving", 0.05)

        def on_progress(stage: str, fraction: float) -> None:
            ctx.progress(stage, 0.05 + 0.9 * fraction)

        t0 = time.perf_counter()
        with _interruptible(state):
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
                    files, guard_info = _save_guard(state, loaded.pipe, erasure_spec, tenant, job_id, tmp, files)
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

    return _run(ctx, body)


def _save_guard(state: WorkerState, pipe: Any, spec: Any, tenant: str, job_id: str, tmp: Path,
                files: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build the erasure's prompt guard on the base model (before any delta) and put its files."""
    from erasepro_core.guard import GUARD_JSON, GUARD_TENSORS, guard_for_spec

    with _interruptible(state):
        guard = guard_for_spec(pipe, spec)
    guard.save(tmp)
    files = dict(files)
    for name in (GUARD_TENSORS, GUARD_JSON):
        path = tmp / name
        files[name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
        state.storage.put_file(store.checkpoint_key(tenant, job_id, name), path, move=True,
                               sha256=files[name]["sha256"])
    return files, {"mode": guard.mode, "threshold": guard.threshold, "targets": guard.targets,
                   "signature_columns": guard.stats.get("signature_columns")}


def _guard_verdict(state: WorkerState, tenant: str, erasure_id: str, manifest: dict, pipe: Any,
                   prompt: str) -> Any:
    """The erasure's prompt guard on ``prompt`` (``None`` when the erasure has no guard), read with the base text
    encoder (before the delta is applied)."""
    from erasepro_core.guard import GUARD_JSON, GUARD_TENSORS, PromptGuard

    guard_files = manifest.get("files", {})
    if not manifest.get("guard") or GUARD_TENSORS not in guard_files or GUARD_JSON not in guard_files:
        return None
    blobs = {}
    for name in (GUARD_TENSORS, GUARD_JSON):
        data = state.storage.get_bytes(store.checkpoint_key(tenant, erasure_id, name))
        if hashlib.sha256(data).hexdigest() != guard_files[name]["sha256"]:
            raise JobFailed(f"the prompt guard of erasure {erasure_id} does not match its checksum")
        blobs[name] = data
    guard = PromptGuard.from_bytes(blobs[GUARD_TENSORS], blobs[GUARD_JSON])
    return guard, guard.check(pipe, prompt)


# -------------------------------------------------------------------------------------------- generation
def _load_checkpoint(state: WorkerState, tenant: str, erasure_id: str) -> dict:
    manifest = store.read_manifest(state.storage, tenant, erasure_id)
    if manifest is None or manifest.get("tenant") != tenant:
        raise JobFailed(f"the checkpoint of erasure {erasure_id} is gone: it was deleted, or this worker does not "
                        f"share the API's artifact storage ({state.storage.description})")
    return manifest


def _delta(state: WorkerState, tenant: str, erasure_id: str, manifest: dict) -> Any:
    """The erasure's delta, loaded (and, from an object store, downloaded) once per worker, sha256-checked."""
    return state.deltas.get(state.storage, store.checkpoint_key(tenant, erasure_id, store.DELTA_FILE),
                            manifest["files"][store.DELTA_FILE]["sha256"])


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
        info = _model(state, base_model)
        loaded = state.cache.get(info)
        timings.update(load_s=round(loaded.load_s, 4), model_cached=loaded.hit, device=loaded.device)
        kwargs = {k: params[k] for k in ("negative_prompt", "seed", "steps", "guidance", "width", "height",
                                         "num_images") if k in params}
        t1 = time.perf_counter()
        guard_view = None
        if erasure_id:
            manifest = _load_checkpoint(state, tenant, erasure_id)
            checked = _guard_verdict(state, tenant, erasure_id, manifest, loaded.pipe, params["prompt"])
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
            delta = _delta(state, tenant, erasure_id, manifest)
            try:
                with _interruptible(state), applied_delta(loaded.pipe, delta):
                    images = generate(loaded.pipe, params["prompt"], **kwargs)
            except BaseException:
                state.cache.evict(info)  # the restore may not have run to completion
                raise
        else:
            with _interruptible(state):  # DELETE /v1/generations/{id} stops it mid-sampling
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

    return _run(ctx, body)


# ------------------------------------------------------------------------------------------------ export
@contextmanager
def _manifest_lock(state: WorkerState, erasure_id: str) -> Iterator[None]:
    """Around a read-modify-write of a checkpoint's manifest (the API's delete takes it too). A Redis lock: every
    worker and API process shares Redis, whatever the artifact store, and it expires if its holder dies."""
    lock = state.r.lock(store.k_checkpoint_lock(erasure_id), timeout=store.CHECKPOINT_LOCK_TTL_S,
                        blocking_timeout=store.CHECKPOINT_LOCK_TTL_S)
    if not lock.acquire():
        raise JobFailed(f"checkpoint {erasure_id} stayed locked for {store.CHECKPOINT_LOCK_TTL_S} s; try again")
    try:
        yield
    finally:
        try:
            lock.release()
        except Exception as exc:  # it expired (the section overran its TTL): the write is done either way
            log.warning("checkpoint lock of %s: %s", erasure_id, exc)


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
        manifest = _load_checkpoint(state, tenant, erasure_id)
        if name in manifest.get("files", {}):
            ctx.finish("succeeded")
            return {"status": "succeeded"}
        info = _model(state, manifest["base_model"]["name"])
        loaded = state.cache.get(info)
        delta = _delta(state, tenant, erasure_id, manifest)
        ctx.progress("exporting", 0.1)
        storage = state.storage
        tar_key = store.checkpoint_key(tenant, erasure_id, name)
        evaluation = (manifest.get("evaluations") or [None])[-1]  # the latest, for the model card
        with storage.scratch(store.checkpoint_prefix(tenant, erasure_id), f"{job_id}-export") as tmpdir:
            try:
                with _interruptible(state):
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
        with _manifest_lock(state, erasure_id):
            current = store.read_manifest(storage, tenant, erasure_id)
            if current is None:  # deleted meanwhile (the delete may have run before our put): leave nothing
                storage.delete(tar_key)
                raise JobFailed(f"checkpoint {erasure_id} was deleted during the export")
            current.setdefault("files", {})[name] = entry
            current["exported_at"] = store.now()
            store.write_manifest(storage, tenant, erasure_id, current)
        ctx.finish("succeeded", progress={"stage": "done", "fraction": 1.0})
        return {"status": "succeeded", **entry}

    return _run(ctx, body)


def cleanup_stale(state: WorkerState) -> int:
    """Remove what crashed workers left: scratch folders (``.tmp-{job}-…``) and checkpoints without a
    manifest, of jobs that hold no lease; and ``.trash-`` folders of interrupted deletes."""
    removed = 0
    storage = state.storage

    def orphan(name: str) -> bool:
        job = next((p for p in name.split("-") if store.JOB_ID_RE.match(p)), None)
        return job is None or not state.r.exists(store.k_lease(job))

    roots: list[Path] = []
    if isinstance(storage, FileStorage):
        roots = list((storage.root / "tenants").glob("*/erasures"))
    elif getattr(storage, "scratch_root", None) is not None:
        roots = [storage.scratch_root]
    for root in roots:
        try:
            entries = list(root.iterdir())
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.startswith(".trash-") or (entry.name.startswith(".tmp-") and orphan(entry.name)):
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
                removed += 1
    # a crash between the delta's put and the manifest's leaves objects no manifest names
    seen: dict[tuple[str, str], bool] = {}
    for obj in storage.list("tenants"):
        parts = obj.key.split("/")
        if len(parts) == 5 and parts[2] == "erasures" and store.JOB_ID_RE.match(parts[3]):
            seen[(parts[1], parts[3])] = seen.get((parts[1], parts[3]), False) or parts[4] == store.MANIFEST
    for (tenant, job_id), complete in seen.items():
        if not complete and not state.r.exists(store.k_lease(job_id)):
            storage.delete_prefix(store.checkpoint_prefix(tenant, job_id))
            removed += 1
    return removed
