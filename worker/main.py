"""The worker process: an RQ worker that runs jobs in-process, so loaded models stay cached between jobs.

``python -m worker --queues erase,generate`` or ``erasepro worker --queues erase,generate``. Uses the GPU
when there is one (``ERASEPRO_DEVICE`` overrides). Run several, on one machine or many, against the same
Redis and the same shared ``ERASEPRO_DATA_DIR``.

Lanes: evaluations and exports (hours, gigabytes) are on the ``heavy`` queue. A worker serving ``erase`` without
naming ``heavy`` starts a second process, its heavy lane (``--queues heavy``, named ``<name>-heavy``), so one
worker runs a long evaluation and the erasures queued meanwhile side by side (``--no-heavy-lane``: no second
process; then some worker must serve ``heavy``). The lane stops with its parent, and is restarted if it dies.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from erasepro_jobs import logs
from erasepro_jobs.registry import ModelUnavailable
from erasepro_jobs.settings import (
    ERASE_QUEUE,
    GENERATE_QUEUE,
    HEAVY_QUEUE,
    JOB_FUNCTIONS,
    WEBHOOK_QUEUE,
    Settings,
    redact_url,
)
from worker.runtime import Heartbeat, WorkerState, set_state

log = logging.getLogger("erasepro.worker")


class JobNotAllowed(Exception):
    """A queued job names a function outside the project's allowlist (anyone who can write to Redis could
    otherwise make the worker import and call any function on its path)."""


class AllowlistedJob(Job):
    """An RQ job that resolves only the project's job functions, and never callbacks named in Redis."""

    @property
    def func(self):  # type: ignore[override]
        name = self.func_name
        if name not in JOB_FUNCTIONS or self.instance is not None:
            raise JobNotAllowed(f"refused to run {name!r}: workers run only {sorted(JOB_FUNCTIONS)}")
        return super().func

    def _no_callback(self) -> None:
        return None

    success_callback = property(_no_callback)  # type: ignore[assignment]
    failure_callback = property(_no_callback)  # type: ignore[assignment]
    stopped_callback = property(_no_callback)  # type: ignore[assignment]


PUBSUB_POLL_S = 1.0  # how long a stopping worker may wait for its pub/sub listener (see ErasureWorker.subscribe)


class ErasureWorker(SimpleWorker):
    """RQ's in-process worker (no fork per job: the model cache survives), JSON-serialized jobs, and only the
    functions in :data:`erasepro_jobs.settings.JOB_FUNCTIONS` (see :class:`AllowlistedJob`).

    Timeouts still work: RQ arms ``SIGALRM`` around each job and raises ``JobTimeoutException`` in it.
    """

    job_class = AllowlistedJob
    lane: HeavyLane | None = None

    def request_stop(self, signum: int, frame: object) -> None:  # the first SIGTERM/SIGINT: the lane too
        if self.lane is not None:
            self.lane.signal(signum)
        super().request_stop(signum, frame)

    def request_force_stop(self, signum: int, frame: object) -> None:  # the second: the lane's job too
        if self.lane is not None:
            self.lane.signal(signum)
        super().request_force_stop(signum, frame)

    def subscribe(self) -> None:
        """RQ's own, with its listener waking every second instead of every minute: redis-py >= 8's
        ``PubSubWorkerThread.stop()``, which RQ calls on the way out, waits for the thread, and once unsubscribed
        that thread sleeps out its whole ``get_message`` timeout - so every worker stop took its full grace period
        (10 s in ``erasepro serve``) and ended in a cold shutdown."""
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(sleep_time=PUBSUB_POLL_S, daemon=True,
                                                       exception_handler=self._pubsub_exception_handler)


def _die_with_parent() -> None:
    """``preexec_fn``: the lane gets SIGKILL if its parent dies without stopping it (Linux); its job's lease then
    expires and the job is recorded failed, as for any killed worker."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class HeavyLane:
    """The heavy lane of a worker: ``python -m worker --queues heavy`` as a child process, restarted (after a
    second) if it exits while the parent serves; stopped with the parent (each signal forwarded)."""

    def __init__(self, name: str, log_level: str) -> None:
        self.argv = [sys.executable, "-m", "worker", "--queues", HEAVY_QUEUE, "--name", f"{name}-heavy",
                     "--no-heavy-lane", "--log-level", log_level]
        self.proc: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self._watch = threading.Thread(target=self._supervise, name="erasepro-heavy-lane", daemon=True)

    def start(self) -> HeavyLane:
        self.proc = self._spawn()
        self._watch.start()
        return self

    def _spawn(self) -> subprocess.Popen:
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        return subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, preexec_fn=preexec)  # noqa: PLW1509

    def _supervise(self) -> None:
        while not self.stopping.wait(1.0):
            proc = self.proc
            if proc is not None and proc.poll() is not None and not self.stopping.is_set():
                log.warning("the heavy lane (pid %d) exited with %s; restarting it", proc.pid, proc.returncode)
                self.proc = self._spawn()

    def signal(self, signum: int) -> None:
        self.stopping.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (a warm stop) unless a signal was forwarded already; wait, then SIGKILL."""
        if not self.stopping.is_set():
            self.signal(signal.SIGTERM)
        proc = self.proc
        if proc is None:
            return
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def parse_queues(text: str) -> list[str]:
    queues = [q.strip() for q in text.split(",") if q.strip()]
    known = (ERASE_QUEUE, HEAVY_QUEUE, GENERATE_QUEUE, WEBHOOK_QUEUE)
    unknown = set(queues) - set(known)
    if not queues or unknown:
        raise argparse.ArgumentTypeError(f"queues are some of {', '.join(map(repr, known))}, got {text!r}")
    return queues


def run_worker(queues: Sequence[str], settings: Settings | None = None, *, name: str | None = None,
               burst: bool = False, preload: Sequence[str] = (), log_level: str = "INFO",
               warm: bool = False, heavy_lane: bool = True) -> int:
    """Serve ``queues`` until SIGTERM/SIGINT (a second signal interrupts the running job). Returns 0.

    ``heavy_lane``: when serving ``erase`` but not ``heavy``, run the heavy queue in a child process (see the
    module docstring)."""
    from worker.runner import cleanup_stale

    settings = settings or Settings.from_env()
    os.umask(0o077)  # checkpoints, statistics and event logs are the operator's alone (folders 0700, files 0600)
    logs.configure(log_level, settings.log_format)
    from erasepro_core.pipeline import quiet_libraries

    quiet_libraries()
    state = WorkerState.create(settings, name=name)
    set_state(state)
    signal.signal(signal.SIGUSR1, state.on_sigusr1)
    removed = cleanup_stale(state)
    if removed:
        log.info("removed %d stale temporary checkpoint directories", removed)
    for model in preload:
        try:
            info = state.registry.require(model)
        except ModelUnavailable as exc:
            log.error("--preload: %s", exc)
            return 2
        state.cache.get(info)
    if warm:
        warm_models(state)
    conn = redis.Redis.from_url(settings.redis_url)
    rq_queues = [Queue(q, connection=conn, serializer=JSONSerializer, job_class=AllowlistedJob) for q in queues]
    worker = ErasureWorker(rq_queues, connection=conn, serializer=JSONSerializer, name=state.name,
                           job_class=AllowlistedJob)
    heartbeat = Heartbeat(state)
    heartbeat.start()
    if heavy_lane and not burst and ERASE_QUEUE in queues and HEAVY_QUEUE not in queues:
        worker.lane = HeavyLane(state.name, log_level).start()
    log.info("worker %s on %s, device %s, queues %s", state.name, redact_url(settings.redis_url), state.cache.device,
             ",".join(queues))
    print(f"erasepro worker {state.name} ready (device {state.cache.device}, queues {','.join(queues)})",
          flush=True)
    try:
        worker.work(burst=burst, logging_level=log_level)
    finally:
        if worker.lane is not None:
            worker.lane.stop()
        heartbeat.stop()
        conn.close()
    return 0


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    p.add_argument("--queues", type=parse_queues, default=[ERASE_QUEUE, GENERATE_QUEUE, WEBHOOK_QUEUE],
                   help="comma-separated: erase,heavy,generate,webhooks (default erase,generate,webhooks, and "
                        "heavy in a second process)")
    p.add_argument("--no-heavy-lane", dest="heavy_lane", action="store_false",
                   help="serving erase without heavy, do not start the heavy lane's process")
    p.add_argument("--name", help="worker name (default erasepro-<host>-<pid>)")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument("--preload", action="append", default=[], help="load this base model before serving")
    p.add_argument("--warm", action="store_true",
                   help="compute (or load) the preserve statistics of every installed base model before serving")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def cmd_worker(args: argparse.Namespace) -> int:
    return run_worker(args.queues, name=args.name, burst=args.burst, preload=args.preload,
                      log_level=args.log_level, warm=args.warm, heavy_lane=args.heavy_lane)


def warm_models(state: WorkerState) -> None:
    """Preserve statistics of the registered, installed base models, shared on disk with other workers."""
    from erasepro_core.warmup import warm

    for info in state.registry.models().values():
        if info.available:
            out = warm(state.cache.get(info).pipe, state.feature_cache())
            log.info("warmed %s: %s", info.name, out["modes"])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return cmd_worker(args)
    except (RuntimeError, ValueError) as exc:
        print(f"erasepro worker: error: {exc}", file=sys.stderr)
        return 2
