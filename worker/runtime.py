"""Per-process worker state: settings, registry, caches, the Redis client for job records, and the heartbeat.

The heartbeat thread keeps three promises while the main thread runs jobs:

* ``workers`` (a sorted set) shows this worker alive to ``/readyz``;
* the current job's lease is refreshed, so the API can tell a running job from one whose worker died;
* a cancellation request for the current job is noticed within half a second: the thread sends the process
  ``SIGUSR1`` and the handler raises :class:`JobCancelled` in the job, but only while the job is inside an
  interruptible section (the solve, the export); elsewhere the job checks the flag itself between steps.

With the reaper it also starts the retention sweep (:class:`erasepro_jobs.usage.Retention`, one worker per
``ERASEPRO_RETENTION_INTERVAL_S``) in a thread of its own, so a slow store never delays a lease refresh.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis

from erasepro_jobs import logs, metrics, store
from erasepro_jobs.lifecycle import JobRef, Lifecycle
from erasepro_jobs.registry import Registry
from erasepro_jobs.settings import Settings
from erasepro_jobs.storage import Storage, open_storage
from erasepro_jobs.usage import Retention
from worker.cache import DeltaCache, PipelineCache

log = logging.getLogger("erasepro.worker")

CANCEL_POLL_S = 0.5
HARD_TIMEOUT_EXIT = 70
HARD_TIMEOUT_MSG = ("timed out: the job did not stop at its timeout, so its worker process was ended (and is "
                    "restarted by its supervisor)")


class JobCancelled(Exception):
    """Raised inside a job whose cancellation was requested."""


@dataclass
class WorkerState:
    """Everything the job functions share inside one worker process."""

    settings: Settings
    registry: Registry
    r: redis.Redis
    cache: PipelineCache
    deltas: DeltaCache
    name: str
    lifecycle: Lifecycle
    storage: Storage
    features: Any = None  # erasepro_core.preserve.FeatureCache, created on first use
    current_job: str | None = None
    deadline: float | None = None  # monotonic time after which the heartbeat ends this process (hard timeout)
    cancel_pending: str | None = None
    interruptible: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, settings: Settings, name: str | None = None) -> WorkerState:
        if not settings.redis_url:
            raise RuntimeError("REDIS_URL is not set: the worker needs the same Redis as the API")
        r = redis.Redis.from_url(settings.redis_url, decode_responses=True, health_check_interval=30)
        storage = open_storage(settings)
        return cls(settings=settings, registry=Registry(settings.base_models_file, settings.include_bundled),
                   r=r, lifecycle=Lifecycle(r, settings.data_dir, storage), storage=storage,
                   cache=PipelineCache(settings.cache_size, settings.device),
                   deltas=DeltaCache(files_dir=settings.data_dir / "cache" / "deltas"),
                   name=name or f"erasepro-{os.uname().nodename}-{os.getpid()}")

    def feature_cache(self) -> Any:
        if self.features is None:
            from erasepro_core.preserve import FeatureCache

            self.features = FeatureCache()
        return self.features

    def reset_after_interrupt(self) -> None:
        """Forget derived caches a job interrupted at an arbitrary point might have left half-updated."""
        self.features = None

    # ------------------------------------------------------------------------------------ current job
    def begin(self, job_id: str, timeout_s: float | None = None) -> None:
        """A job starts; past ``timeout_s`` + the grace period it is ended by force (see :meth:`Heartbeat.run`)."""
        deadline = time.monotonic() + timeout_s + self.settings.hard_timeout_grace_s if timeout_s else None
        with self._lock:
            self.current_job, self.cancel_pending, self.interruptible = job_id, None, False
            self.deadline = deadline
        logs.job_id.set(job_id)  # every log line of the job names it (ERASEPRO_LOG_FORMAT=json)

    def end(self) -> None:
        with self._lock:
            self.current_job, self.cancel_pending, self.interruptible = None, None, False
            self.deadline = None
        logs.job_id.set(None)

    @contextmanager
    def interruptible_section(self):
        """Inside: a cancellation interrupts the main thread at once. Outside: only explicit checks see it."""
        with self._lock:
            self.interruptible = True
            pending = self.cancel_pending is not None and self.cancel_pending == self.current_job
        try:
            if pending:
                raise JobCancelled()
            yield
        finally:
            with self._lock:
                self.interruptible = False

    def on_sigusr1(self, signum: int, frame: Any) -> None:
        """Signal handler (main thread): raise in the job if it is interruptible right now."""
        with self._lock:
            fire = self.interruptible and self.cancel_pending is not None and self.cancel_pending == self.current_job
            if fire:
                self.interruptible = False
        if fire:
            raise JobCancelled()


_STATE: WorkerState | None = None
_STATE_LOCK = threading.Lock()


def get_state() -> WorkerState:
    """The process's state; created from the environment on first use (so plain ``rq worker`` works too)."""
    global _STATE
    with _STATE_LOCK:
        if _STATE is None:
            _STATE = WorkerState.create(Settings.from_env())
        return _STATE


def set_state(state: WorkerState) -> None:
    global _STATE
    with _STATE_LOCK:
        _STATE = state


class Heartbeat(threading.Thread):
    """Liveness, lease refresh and cancellation polling (see the module docstring)."""

    def __init__(self, state: WorkerState) -> None:
        super().__init__(name="erasepro-heartbeat", daemon=True)
        self.state = state
        self.stop_event = threading.Event()
        self.main_pid = os.getpid()
        self.retention = Retention(state.r, state.storage, state.settings)
        # One long-lived sweeper, started with the heartbeat (before any job): a thread created while a job holds
        # the process's RLIMIT_AS can find no memory for its stack or thread-local data, and glibc then aborts the
        # whole worker ("cannot allocate memory for thread-local data") - seen when a sweep fell due mid-job.
        self._sweep_due = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="erasepro-retention", daemon=True)

    def start(self) -> None:
        self._sweeper.start()
        super().start()

    def sweep_retention(self) -> None:
        """Ask the sweeper for a retention sweep (it runs one only when due; a sweep still running is not doubled)."""
        self._sweep_due.set()

    def _sweep_loop(self) -> None:
        while not self.stop_event.is_set():
            if not self._sweep_due.wait(1.0):
                continue
            self._sweep_due.clear()
            try:
                self.retention.sweep_if_due()
            except Exception as exc:  # an unreachable store or Redis, a job at its memory limit: the next due sweep
                log.warning("retention sweep: %s", exc)  # tries again

    def beat(self) -> None:
        s = self.state
        ttl = s.settings.lease_ttl_s
        sec, usec = s.r.time()
        now = sec + usec / 1e6  # Redis's clock, sub-second: /readyz compares against the same clock
        with s.r.pipeline(transaction=False) as p:
            p.zadd(store.K_WORKERS, {s.name: now})
            p.zremrangebyscore(store.K_WORKERS, "-inf", sec - 20 * ttl)
            job = s.current_job
            if job:
                p.set(store.k_lease(job), s.name, ex=ttl, xx=True)
            p.execute()

    def poll_cancel(self) -> None:
        s = self.state
        job = s.current_job
        if not job or s.cancel_pending == job:
            return
        if s.r.hget(store.k_job(job), "cancel_requested") == "1":
            with s._lock:
                if s.current_job != job:
                    return
                s.cancel_pending = job
                interrupt = s.interruptible
            if interrupt:
                os.kill(self.main_pid, signal.SIGUSR1)

    def enforce_deadline(self) -> None:
        """RQ's timeout raises in the job's thread, which cannot happen while that thread is stuck in native
        code; past the grace period the job is recorded failed and this process exits (a supervisor restarts
        it, as ``erasepro serve`` and the compose file's restart policy do)."""
        s = self.state
        job, deadline = s.current_job, s.deadline
        if job is None or deadline is None or time.monotonic() < deadline:
            return
        log.error("job %s ignored its timeout for %d s: recording it failed and exiting", job,
                  s.settings.hard_timeout_grace_s)
        rec = s.r.hgetall(store.k_job(job))
        if rec:
            s.lifecycle.finish(JobRef.of(rec), "failed", error=HARD_TIMEOUT_MSG)
        s.r.zrem(store.K_WORKERS, s.name)
        os._exit(HARD_TIMEOUT_EXIT)

    def run(self) -> None:
        interval = self.state.settings.heartbeat_interval_s
        elapsed = interval  # beat at once
        while not self.stop_event.is_set():
            try:
                if elapsed >= interval:
                    self.beat()
                    metrics.report_gpu(self.state.r, self.state.name, 3 * self.state.settings.lease_ttl_s)
                    # every worker also reaps: a job whose worker died is recorded (and its event sent) on this
                    # timer, whether or not anyone reads it
                    self.state.lifecycle.reap()
                    self.sweep_retention()  # exports and images past their TTL, or over a tenant's quota
                    elapsed = 0.0
                self.poll_cancel()
                self.enforce_deadline()
                self.state.lifecycle.pump_webhooks()  # webhook retries whose backoff has passed
            except (redis.RedisError, MemoryError) as exc:  # MemoryError: a job at its limit (RLIMIT_AS) briefly
                log.warning("heartbeat: %s", exc)
            step = min(CANCEL_POLL_S, interval)
            self.stop_event.wait(step)
            elapsed += step

    def stop(self) -> None:
        self.stop_event.set()
        try:
            self.state.r.zrem(store.K_WORKERS, self.state.name)
        except redis.RedisError:
            pass
