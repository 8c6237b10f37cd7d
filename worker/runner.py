"""The job runner: what every RQ job function shares (its record, progress, cancellation, memory bound, errors),
the checkpoint helpers the jobs read with, and the clean-up of what crashed workers left.

One module per job holds its body (:mod:`worker.erasure`, :mod:`worker.generation`, :mod:`worker.export`,
:mod:`worker.evaluate`); each wraps it in :func:`run_job`. Every function takes JSON-able keyword arguments only
(the queues use RQ's JSON serializer: no pickle), keeps its Redis record current (status, progress, timings,
error) and mirrors progress into the RQ job's meta.

Artifacts go through the artifact store (:mod:`erasepro_jobs.storage`: files or S3): each file is built in a
scratch folder and put atomically, ``manifest.json`` last; the record says ``succeeded`` only after the
manifest is stored. A crash at any point leaves either nothing the API serves, or a complete checkpoint.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rq import get_current_job
from rq.timeouts import JobTimeoutException

from erasepro_jobs import memory, store
from erasepro_jobs.lifecycle import PROGRESS_EVENT_STEP, JobRef
from erasepro_jobs.registry import BaseModelInfo, ModelUnavailable
from worker.runtime import JobCancelled, WorkerState

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


def model_info(state: WorkerState, name: str) -> BaseModelInfo:
    try:
        return state.registry.require(name)
    except ModelUnavailable as exc:
        raise JobFailed(f"{exc} (this worker's registry: ERASEPRO_BASE_MODELS)") from None


@contextmanager
def interruptible(state: WorkerState) -> Iterator[None]:
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


def run_job(ctx: JobContext, body: Any) -> dict[str, Any] | None:
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



# ------------------------------------------------------------------------------------------- checkpoints
def load_checkpoint(state: WorkerState, tenant: str, erasure_id: str) -> dict:
    manifest = store.read_manifest(state.storage, tenant, erasure_id)
    if manifest is None or manifest.get("tenant") != tenant:
        raise JobFailed(f"the checkpoint of erasure {erasure_id} is gone: it was deleted, or this worker does not "
                        f"share the API's artifact storage ({state.storage.description})")
    return manifest


def checkpoint_delta(state: WorkerState, tenant: str, erasure_id: str, manifest: dict) -> Any:
    """The erasure's delta, loaded (and, from an object store, downloaded) once per worker, sha256-checked."""
    return state.deltas.get(state.storage, store.checkpoint_key(tenant, erasure_id, store.DELTA_FILE),
                            manifest["files"][store.DELTA_FILE]["sha256"])


@dataclass
class OpenedErasure:
    """A finished erasure as the jobs that read it need it."""
    manifest: dict
    loaded: Any  # the worker cache's entry for the base model (``.pipe``)
    delta: Any


def open_erasure(state: WorkerState, ctx: JobContext, tenant: str, erasure_id: str,
                 check: Callable[[BaseModelInfo], str | None] | None = None) -> OpenedErasure:
    """Load erasure ``erasure_id`` for an evaluation: its manifest, its base model (cached) and its delta.
    ``check`` may refuse the base model with a reason (the API checked, but the registry may have changed since)."""
    ctx.progress("loading model", 0.0)
    manifest = load_checkpoint(state, tenant, erasure_id)
    info = model_info(state, manifest["base_model"]["name"])
    if check is not None and (problem := check(info)):
        raise JobFailed(problem)
    return OpenedErasure(manifest, state.cache.get(info), checkpoint_delta(state, tenant, erasure_id, manifest))


@contextmanager
def manifest_lock(state: WorkerState, erasure_id: str) -> Iterator[None]:
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



def cleanup_stale(state: WorkerState) -> int:
    """Remove what crashed workers left: scratch folders (``.tmp-{job}-…``) and checkpoints without a
    manifest, of jobs that hold no lease; and ``.trash-`` folders of interrupted deletes."""
    removed = 0
    storage = state.storage

    def orphan(name: str) -> bool:
        job = next((p for p in name.split("-") if store.JOB_ID_RE.match(p)), None)
        return job is None or not state.r.exists(store.k_lease(job))

    for root in storage.scratch_roots():
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
