"""``erasepro serve``: the API, plus (without ``REDIS_URL``) an embedded Redis and a worker process.

With ``REDIS_URL`` set it is a plain API process: run workers elsewhere (``erasepro worker``). Without it,
one command gives a working service on a laptop: Redis persists under ``$ERASEPRO_DATA_DIR/redis``, one
worker runs beside the API, and Ctrl-C / SIGTERM stops the API, then the worker, then Redis, leaving no stray
processes. A restart finds every finished checkpoint (the manifests on disk are the durable record).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import FrameType

import uvicorn

from app.embedded import EmbeddedRedis, spawn, stop_processes, worker_argv
from erasepro_jobs import logs
from erasepro_jobs.settings import Settings, redact_url
from erasepro_jobs.storage import Storage, open_storage

log = logging.getLogger("erasepro.serve")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHUTDOWN_MSG = "the service was shut down while this job ran; submit it again"


def child_env(settings: Settings, redis_url: str) -> dict[str, str]:
    """The environment of a worker started beside the API: same settings, the embedded Redis."""
    env = dict(os.environ)
    env["REDIS_URL"] = redis_url
    env["ERASEPRO_DATA_DIR"] = str(settings.data_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


class WorkerSupervisor(threading.Thread):
    """Keeps ``LocalService.workers`` alive: a worker that exits (killed, crashed, out of memory) is reaped at
    once (no zombie), its job is recorded failed and its heartbeat removed (so ``/readyz`` is truthful at once),
    and a new worker is started after a backoff that doubles per crash (1 s … ``max_backoff_s``) and resets
    once a worker has stayed up for ``stable_s``."""

    def __init__(self, service: LocalService, *, poll_s: float = 0.25, max_backoff_s: float = 30.0,
                 stable_s: float = 60.0) -> None:
        super().__init__(name="erasepro-supervisor", daemon=True)
        self.service = service
        self.poll_s, self.max_backoff_s, self.stable_s = poll_s, max_backoff_s, stable_s
        self.stop_event = threading.Event()
        self.restarts = 0
        n = len(service.workers)
        self._backoff = [1.0] * n
        self._up_since = [time.monotonic()] * n
        self._restart_at: list[float | None] = [None] * n

    def run(self) -> None:
        next_reap = time.monotonic()
        while not self.stop_event.wait(self.poll_s):
            if time.monotonic() >= next_reap:  # leases of workers we do not own (or that hung) expire too
                next_reap = time.monotonic() + self.service.settings.heartbeat_interval_s
                self.service.reap()
            for slot in range(len(self.service.workers)):
                try:
                    self._check(slot)
                except Exception:  # never let one bad round end supervision
                    log.exception("supervising worker slot %d", slot)

    def _check(self, slot: int) -> None:
        now = time.monotonic()
        proc = self.service.workers[slot]
        if proc is None:
            due = self._restart_at[slot]
            if due is not None and now >= due and not self.stop_event.is_set():
                self.service.workers[slot] = self.service.spawn_worker(slot)
                self._up_since[slot], self._restart_at[slot] = now, None
                self.restarts += 1
            return
        code = proc.poll()  # reaps an exited child: no zombie
        if code is None:
            if now - self._up_since[slot] >= self.stable_s:
                self._backoff[slot] = 1.0
            return
        released = self.service.forget_worker(worker_name(proc.pid))
        delay = self._backoff[slot]
        self._backoff[slot] = min(2 * delay, self.max_backoff_s)
        self.service.workers[slot] = None
        self._restart_at[slot] = now + delay
        log.warning("worker %d (pid %d) exited with %s; %d job(s) re-queued or failed; restarting in %.0f s",
                    slot, proc.pid, code, released, delay)

    def stop(self) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(5)


class LocalService:
    """Embedded Redis + worker processes (+ the API, in this process). Used by ``serve`` and ``demo``."""

    def __init__(self, settings: Settings, *, workers: int = 1, persist: bool = True) -> None:
        self.settings = settings
        self.n_workers = workers
        self.persist = persist
        self.redis: EmbeddedRedis | None = None
        self.workers: list[subprocess.Popen | None] = []
        self.supervisor: WorkerSupervisor | None = None
        self.server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def logs_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    def start_backend(self) -> Settings:
        """Start Redis (unless ``REDIS_URL`` is set) and the workers; returns settings pointing at that Redis."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if not self.settings.redis_url:
            self.redis = EmbeddedRedis(self.settings.data_dir / "redis", persist=self.persist).start()
            self.settings = self.settings.replace(redis_url=self.redis.url)
            for i in range(self.n_workers):
                self.workers.append(self.spawn_worker(i))
            self.supervisor = WorkerSupervisor(self)
            self.supervisor.start()
        return self.settings

    def spawn_worker(self, slot: int) -> subprocess.Popen:
        assert self.redis is not None
        return spawn(worker_argv(), env=child_env(self.settings, self.redis.url),
                     log_path=self.logs_dir / f"worker-{slot}.log")

    def forget_worker(self, name: str) -> int:
        """A worker of ours is gone: drop its heartbeat and record its job failed; returns how many jobs."""
        import redis as redis_lib

        from erasepro_jobs import store

        if self.redis is None:
            return 0
        client = redis_lib.Redis.from_url(self.redis.url, decode_responses=True)
        try:
            client.zrem(store.K_WORKERS, name)
        except redis_lib.RedisError as exc:
            log.warning("could not drop the heartbeat of %s: %s", name, exc)
        finally:
            client.close()
        return self.release_leases([name], "the worker running this job died (its process exited)",
                                   retry_jobs=True)

    def wait_ready(self, timeout_s: float = 300.0) -> bool:
        """Block until a worker heartbeats (or ``timeout_s``); False if a worker died first."""
        import redis as redis_lib

        from erasepro_jobs import store

        if not self.workers:
            return True
        client = redis_lib.Redis.from_url(self.settings.redis_url or "", decode_responses=True)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if any(w is None or w.poll() is not None for w in self.workers):
                    return False
                if client.zcard(store.K_WORKERS) > 0:
                    return True
                time.sleep(0.2)
            return False
        finally:
            client.close()

    def make_server(self, host: str, port: int, log_level: str = "info") -> uvicorn.Server:
        from app.http_guard import GuardedH11Protocol
        from app.main import create_app

        config = uvicorn.Config(create_app(self.settings), host=host, port=port, log_level=log_level,
                                timeout_graceful_shutdown=10, http=GuardedH11Protocol)
        self.server = uvicorn.Server(config)
        return self.server

    def start_api_thread(self, host: str, port: int, log_level: str = "warning") -> None:
        """Run the API in a background thread (for the demo); returns once it accepts connections."""
        server = self.make_server(host, port, log_level)
        self._thread = threading.Thread(target=server.run, name="erasepro-api", daemon=True)
        self._thread.start()
        while not server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the API did not start on {host}:{port}")
            time.sleep(0.05)

    @functools.cached_property
    def storage(self) -> Storage:
        """The artifact store (the reaper asks it whether a lost job's checkpoint is complete); opened once."""
        return open_storage(self.settings)

    def release_leases(self, names: list[str], error: str = SHUTDOWN_MSG, *, retry_jobs: bool = False) -> int:
        """Record as failed the jobs our (now stopped) workers still held, instead of waiting for the leases to
        expire; returns how many. Only in embedded mode, where this process owns the workers."""
        import redis as redis_lib

        from erasepro_jobs.lifecycle import Lifecycle

        if not names or self.redis is None:
            return 0
        client = redis_lib.Redis.from_url(self.redis.url, decode_responses=True)
        try:
            return Lifecycle(client, self.settings.data_dir, self.storage).release(names, error,
                                                                                    retry_jobs=retry_jobs)
        except redis_lib.RedisError as exc:
            log.warning("could not release the stopped workers' jobs: %s", exc)
            return 0
        finally:
            client.close()

    def reap(self) -> int:
        """Record the jobs whose worker died (lease expired); the supervisor calls this on its timer."""
        import redis as redis_lib

        from erasepro_jobs.lifecycle import Lifecycle

        if self.redis is None:
            return 0
        client = redis_lib.Redis.from_url(self.redis.url, decode_responses=True)
        try:
            return Lifecycle(client, self.settings.data_dir, self.storage).reap()
        except redis_lib.RedisError as exc:
            log.warning("reaper: %s", exc)
            return 0
        finally:
            client.close()

    def stop(self) -> None:
        """Stop in order: API, workers (a running job is given a few seconds), Redis. Idempotent."""
        t0 = time.monotonic()
        if self.server is not None:
            self.server.should_exit = True
            if self._thread is not None:
                self._thread.join(15)
        t1 = time.monotonic()
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        live = [w for w in self.workers if w is not None]
        names = [worker_name(w.pid) for w in live]
        stop_processes(live, grace_s=10, second_signal_s=5)
        self.workers = []
        t2 = time.monotonic()
        if self.redis is not None:
            self.release_leases(names)
            self.redis.stop()
            self.redis = None
        log.info("stopped: API %.1f s, workers %.1f s, Redis %.1f s", t1 - t0, t2 - t1, time.monotonic() - t2)


def worker_name(pid: int) -> str:
    """The name a worker started here registers under (see ``worker.runtime.WorkerState.create``)."""
    return f"erasepro-{os.uname().nodename}-{pid}"


def serve(host: str = "127.0.0.1", port: int = 8000, *, workers: int = 1, log_level: str = "info") -> int:
    """Run the service in the foreground until SIGINT/SIGTERM; returns the exit code."""
    settings = Settings.from_env()
    logs.configure(log_level, settings.log_format)
    service = LocalService(settings, workers=workers)
    stop_signals: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:  # uvicorn re-raises the signals it caught
        stop_signals.append(signum)

    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        settings = service.start_backend()
        if service.redis is not None:
            print(f"erasepro: embedded Redis at {redact_url(service.redis.url)} (password in "
                  f"{service.redis.directory / 'password'}; data in {settings.data_dir}); "
                  f"{len(service.workers)} worker(s), logs in {service.logs_dir}", flush=True)
        if stop_signals:
            return 0
        server = service.make_server(host, port, log_level)
        print(f"erasepro: API on http://{host}:{port} (docs at /docs)", flush=True)
        server.run()
        return 0 if server.started or stop_signals else 1
    finally:
        print("erasepro: shutting down", flush=True)
        service.stop()
        for s, h in previous.items():
            signal.signal(s, h)
