"""The worker process: an RQ worker that runs jobs in-process, so loaded models stay cached between jobs.

``python -m worker --queues erase,generate`` or ``erasepro worker --queues erase,generate``. Uses the GPU
when there is one (``ERASEPRO_DEVICE`` overrides). Run several, on one machine or many, against the same
Redis and the same shared ``ERASEPRO_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from erasepro_jobs.registry import ModelUnavailable
from erasepro_jobs.settings import ERASE_QUEUE, GENERATE_QUEUE, JOB_FUNCTIONS, WEBHOOK_QUEUE, Settings, redact_url
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


class ErasureWorker(SimpleWorker):
    """RQ's in-process worker (no fork per job: the model cache survives), JSON-serialized jobs, and only the
    functions in :data:`erasepro_jobs.settings.JOB_FUNCTIONS` (see :class:`AllowlistedJob`).

    Timeouts still work: RQ arms ``SIGALRM`` around each job and raises ``JobTimeoutException`` in it.
    """

    job_class = AllowlistedJob


def parse_queues(text: str) -> list[str]:
    queues = [q.strip() for q in text.split(",") if q.strip()]
    unknown = set(queues) - {ERASE_QUEUE, GENERATE_QUEUE, WEBHOOK_QUEUE}
    if not queues or unknown:
        raise argparse.ArgumentTypeError(f"queues are {ERASE_QUEUE!r}, {GENERATE_QUEUE!r} and/or {WEBHOOK_QUEUE!r}, "
                                         f"got {text!r}")
    return queues


def run_worker(queues: Sequence[str], settings: Settings | None = None, *, name: str | None = None,
               burst: bool = False, preload: Sequence[str] = (), log_level: str = "INFO",
               warm: bool = False) -> int:
    """Serve ``queues`` until SIGTERM/SIGINT (a second signal interrupts the running job). Returns 0."""
    from worker.jobs import cleanup_stale

    settings = settings or Settings.from_env()
    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
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
    log.info("worker %s on %s, device %s, queues %s", state.name, redact_url(settings.redis_url), state.cache.device,
             ",".join(queues))
    print(f"erasepro worker {state.name} ready (device {state.cache.device}, queues {','.join(queues)})",
          flush=True)
    try:
        worker.work(burst=burst, logging_level=log_level)
    finally:
        heartbeat.stop()
        conn.close()
    return 0


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    p.add_argument("--queues", type=parse_queues, default=[ERASE_QUEUE, GENERATE_QUEUE, WEBHOOK_QUEUE],
                   help="comma-separated: erase,generate,webhooks (default all)")
    p.add_argument("--name", help="worker name (default erasepro-<host>-<pid>)")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument("--preload", action="append", default=[], help="load this base model before serving")
    p.add_argument("--warm", action="store_true",
                   help="compute (or load) the preserve statistics of every installed base model before serving")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def cmd_worker(args: argparse.Namespace) -> int:
    return run_worker(args.queues, name=args.name, burst=args.burst, preload=args.preload,
                      log_level=args.log_level, warm=args.warm)


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
