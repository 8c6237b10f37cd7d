"""``erasepro serve``: the API, plus (without ``REDIS_URL``) an embedded Redis and a worker process.

With ``REDIS_URL`` set it is a plain API process: run workers elsewhere (``erasepro worker``). Without it,
one command gives a working service on a laptop: Redis persists under ``$ERASEPRO_DATA_DIR/redis``, one
worker runs beside the API, and Ctrl-C / SIGTERM stops the API, then the worker, then Redis, leaving no stray
processes. A restart finds every finished checkpoint (the manifests on disk are the durable record).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import FrameType

import uvicorn

from app.config import Settings
from app.embedded import EmbeddedRedis, spawn, stop_process, worker_argv

log = logging.getLogger("erasepro.serve")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def child_env(settings: Settings, redis_url: str) -> dict[str, str]:
    """The environment of a worker started beside the API: same settings, the embedded Redis."""
    env = dict(os.environ)
    env["REDIS_URL"] = redis_url
    env["ERASEPRO_DATA_DIR"] = str(settings.data_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


class LocalService:
    """Embedded Redis + worker processes (+ the API, in this process). Used by ``serve`` and ``demo``."""

    def __init__(self, settings: Settings, *, workers: int = 1, persist: bool = True) -> None:
        self.settings = settings
        self.n_workers = workers
        self.persist = persist
        self.redis: EmbeddedRedis | None = None
        self.workers: list[subprocess.Popen] = []
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
            self.settings = dataclasses.replace(self.settings, redis_url=self.redis.url)
            env = child_env(self.settings, self.redis.url)
            for i in range(self.n_workers):
                self.workers.append(spawn(worker_argv(), env=env, log_path=self.logs_dir / f"worker-{i}.log"))
        return self.settings

    def wait_ready(self, timeout_s: float = 300.0) -> bool:
        """Block until a worker heartbeats (or ``timeout_s``); False if a worker died first."""
        import redis as redis_lib

        from app import store

        if not self.workers:
            return True
        client = redis_lib.Redis.from_url(self.settings.redis_url or "", decode_responses=True)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if any(w.poll() is not None for w in self.workers):
                    return False
                if client.zcard(store.K_WORKERS) > 0:
                    return True
                time.sleep(0.2)
            return False
        finally:
            client.close()

    def make_server(self, host: str, port: int, log_level: str = "info") -> uvicorn.Server:
        from app.main import create_app

        config = uvicorn.Config(create_app(self.settings), host=host, port=port, log_level=log_level,
                                timeout_graceful_shutdown=10)
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

    def release_leases(self, names: list[str]) -> int:
        """Record as failed the jobs our (now stopped) workers still held, instead of waiting for the leases to
        expire; returns how many. Only in embedded mode, where this process owns the workers."""
        import redis as redis_lib

        from app import store

        if not names or self.redis is None:
            return 0
        client = redis_lib.Redis.from_url(self.redis.url, decode_responses=True)
        finish = client.register_script(store.LUA_FINISH)
        released = 0
        try:
            for key in client.scan_iter(match=store.k_lease("*"), count=1000):
                if client.get(key) in names:
                    job_id = key.rsplit(":", 1)[1]
                    finish(keys=[store.k_job(job_id), key, store.k_done(job_id)],
                           args=["failed", repr(store.now()), "error",
                                 "the service was shut down while this job ran; submit it again"])
                    client.delete(key)
                    released += 1
        except redis_lib.RedisError as exc:
            log.warning("could not release the stopped workers' jobs: %s", exc)
        finally:
            client.close()
        return released

    def stop(self) -> None:
        """Stop in order: API, workers (a running job is given a few seconds), Redis. Idempotent."""
        if self.server is not None:
            self.server.should_exit = True
            if self._thread is not None:
                self._thread.join(15)
        names = [worker_name(w.pid) for w in self.workers]
        for w in self.workers:
            stop_process(w, grace_s=10, second_signal_s=5)
        self.workers = []
        if self.redis is not None:
            self.release_leases(names)
            self.redis.stop()
            self.redis = None


def worker_name(pid: int) -> str:
    """The name a worker started here registers under (see ``worker.runtime.WorkerState.create``)."""
    return f"erasepro-{os.uname().nodename}-{pid}"


def serve(host: str = "127.0.0.1", port: int = 8000, *, workers: int = 1, log_level: str = "info") -> int:
    """Run the service in the foreground until SIGINT/SIGTERM; returns the exit code."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    service = LocalService(settings, workers=workers)
    stop_signals: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:  # uvicorn re-raises the signals it caught
        stop_signals.append(signum)

    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        settings = service.start_backend()
        if service.redis is not None:
            print(f"erasepro: embedded Redis at {service.redis.url} (data in {settings.data_dir}); "
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
