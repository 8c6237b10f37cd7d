"""The real service for the tests: a private redis-server, one RQ worker process and the API under uvicorn.

Nothing is faked: the worker is ``python -m worker`` and the API is ``uvicorn app.main:app``, both separate
processes talking to a redis-server started here on a free port (never the shared one on 6379, so flushing it
is safe). The base models are tiny random-weights SD-1.x pipelines and one FLUX.1-layout pipeline, saved into a
temporary directory and registered in a TOML file. One stack serves every ``test_service_*`` module (a
process-wide singleton); tests that kill the worker or flush Redis restore what they broke.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.embedded import EmbeddedRedis, free_port, spawn, stop_process, stop_processes
from app.http_guard import PROTOCOL

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"acme": "test-key-acme-0123456789abcdef", "globex": "test-key-globex-0123456789abcdef",
        "bulk": "test-key-bulk-0123456789abcdef"}  # bulk: many jobs (test_service_listing.py)
ADMIN_KEY = "test-admin-key-0123456789abcdef"  # ERASEPRO_ADMIN_KEYS: GET /v1/audit, /metrics
METRICS_TOKEN = "test-metrics-token-0123456789"  # ERASEPRO_METRICS_TOKEN: GET /metrics
LEASE_TTL_S = 5  # short, so a killed worker's job is declared failed soon; not too short for a busy CPU
DEADLINE_S = 300.0  # a guard against hanging, never an assertion about speed
SLOW_CLIENT_TIMEOUT_S = 2  # header and body deadlines of the test API (slow-client tests wait this long)
FUZZ_LIMITED_TENANT, FUZZ_LIMIT = "globex", 3  # on the fuzz API (no worker: jobs stay queued)
GEN = {"steps": 3, "width": 32, "height": 32, "guidance": 5.0}

# A job that runs for a long time on the tiny model (its first progress step alone takes seconds):
# the cancellation, timeout and kill tests interrupt it early.
LONG_SPEC = {
    "base_model": "tiny",
    # Since the solve is linear in the columns (d-space past the width), 400 concepts x 6 templates take 0.3 s:
    # 1,000 x 24 templates with every token to the end take ~18 s on 2 cores.
    "edits": [{"target": f"concept number {i}", "anchor": ""} for i in range(1000)],
    "options": {"templates": [t + x for t in ("{}", "a {}", "the {}", "photo of {}", "an image of {}", "art of {}")
                              for x in ("", ", detailed", ", today", ", again")],
                "token_policy": "to_end"},
}
SHORT_SPEC = {"base_model": "tiny", "edits": [{"target": "a cat", "anchor": "a dog"}]}


def wait_for(predicate: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S, every: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy and return it; fail the test (not time it) if it never is."""
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(every)


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - out
        out |= frontier
    return out


def proc_state(pid: int) -> str | None:
    """The /proc state letter of ``pid`` (``Z`` = zombie), ``None`` if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z")


SERVE_KEY = "serve-test-key-0123456789"


def start_serve(tmp: Path, port: int, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """``erasepro serve`` (embedded Redis + supervised worker) on ``port``, data in ``tmp/data``, the tiny model
    registered as ``tiny``; tenant ``acme`` has the key :data:`SERVE_KEY`. Output goes to ``tmp/serve.log``."""
    from erasepro_core.pipeline import save_pipeline
    from erasepro_core.tiny import tiny_sd_pipeline

    if not (tmp / "tiny" / "model_index.json").is_file():
        save_pipeline(tiny_sd_pipeline(seed=0), tmp / "tiny")
        (tmp / "models.toml").write_text(f'[models.tiny]\npath = "{tmp / "tiny"}"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(ERASEPRO_DATA_DIR=str(tmp / "data"), ERASEPRO_BASE_MODELS=str(tmp / "models.toml"),
               ERASEPRO_API_KEYS=f"acme:{SERVE_KEY}", ERASEPRO_BUNDLED="0", PYTHONPATH=str(ROOT),
               ERASEPRO_RATE_LIMIT="0", ERASEPRO_RATE_LIMIT_ADDRESS="0", ERASEPRO_RATE_LIMIT_UNAUTHENTICATED="0",
               ERASEPRO_JOB_ATTEMPTS="1")  # the fault suite checks what one death leaves; retries: test_service_retry
    env.update(extra_env or {})
    log = open(tmp / "serve.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen([sys.executable, "-m", "erasepro_core.cli", "serve", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


class ServeProcess:
    """One ``erasepro serve`` (:func:`start_serve`) on a free port with ``env``, ready once constructed."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.start()

    def start(self) -> None:
        self.port = free_port()
        self.proc = start_serve(self.tmp, self.port, self.env)
        wait_for(lambda: self.proc.poll() is not None or self.ready(), "serve to be ready")

    def client(self, key: str = SERVE_KEY) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60,
                            headers={"Authorization": f"Bearer {key}"})

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return (self.tmp / "serve.log").read_text(errors="replace")[-4000:]


def serving(tmp: Path, env: dict[str, str]) -> Iterator[ServeProcess]:
    """A module fixture's body: :class:`ServeProcess` up (on another port if the embedded Redis took the first),
    stopped after."""
    s = ServeProcess(tmp, env)
    try:
        if s.proc.poll() is not None and "address already in use" in s.log():
            s.start()  # the embedded Redis took the free port chosen for the API first: another port
        assert s.proc.poll() is None, s.log()
        yield s
    finally:
        stop_process(s.proc, grace_s=60)


class Stack:
    """The running service and handles on its parts."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="erasepro-svc-"))
        self.data_dir = self.tmp / "data"
        self.models_dir = self.tmp / "models"
        self.logs = self.tmp / "logs"
        self.logs.mkdir(parents=True)
        self.redis_server: EmbeddedRedis | None = None
        self.worker: subprocess.Popen | None = None
        self.api: subprocess.Popen | None = None
        self.fuzz_api: subprocess.Popen | None = None
        self.port = 0
        self.env: dict[str, str] = {}
        self.r: redis.Redis | None = None

    # ------------------------------------------------------------------------------------------ start
    def build_models(self) -> None:
        from erasepro_core.pipeline import save_pipeline
        from erasepro_core.tiny import tiny_sd_pipeline, write_tiny_flux, write_tiny_sd3

        save_pipeline(tiny_sd_pipeline(seed=0), self.models_dir / "tiny")
        save_pipeline(tiny_sd_pipeline(seed=1), self.models_dir / "tiny-b")
        write_tiny_flux(self.models_dir / "flux")
        write_tiny_sd3(self.models_dir / "sd3")
        (self.tmp / "models.toml").write_text(
            f'[models.tiny]\npath = "{self.models_dir / "tiny"}"\nfamily = "sd1"\n'
            f'description = "tiny test pipeline"\n\n'
            f'[models.flux]\npath = "{self.models_dir / "flux"}"\nfamily = "flux"\n\n'
            f'[models.sd3]\npath = "{self.models_dir / "sd3"}"\nfamily = "sd3"\n\n'
            f'[models.tiny-b]\npath = "{self.models_dir / "tiny-b"}"\nfamily = "sd1"\n\n'
            f'[models.absent]\npath = "{self.tmp / "no-such-model"}"\n', encoding="utf-8")

    def start(self) -> Stack:
        self.build_models()
        self.redis_server = EmbeddedRedis(self.tmp / "redis", persist=False).start()
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis_server.url,
            "ERASEPRO_DATA_DIR": str(self.data_dir),
            "ERASEPRO_BASE_MODELS": str(self.tmp / "models.toml"),
            "ERASEPRO_API_KEYS": ",".join(f"{t}:{k}" for t, k in KEYS.items()),
            "ERASEPRO_ADMIN_KEYS": f"ops:{ADMIN_KEY}", "ERASEPRO_METRICS_TOKEN": METRICS_TOKEN,
            # one run per job: the kill tests here check what a death leaves (tests/test_service_retry.py retries)
            "ERASEPRO_JOB_ATTEMPTS": "1",
            "ERASEPRO_LEASE_TTL_S": str(LEASE_TTL_S),
            "ERASEPRO_GENERATE_WAIT_S": "120",
            "ERASEPRO_MAX_ERASE_TIMEOUT_S": "3600",
            "ERASEPRO_BUNDLED": "0",
            "ERASEPRO_CACHE_SIZE": "2",
            "ERASEPRO_HEADER_TIMEOUT_S": str(SLOW_CLIENT_TIMEOUT_S),
            "ERASEPRO_BODY_TIMEOUT_S": str(SLOW_CLIENT_TIMEOUT_S),
            "ERASEPRO_WEBHOOK_ALLOW_PRIVATE": "1",  # the test receivers listen on loopback
            "ERASEPRO_WEBHOOK_PORTS": "any",  # ... on ports the OS picks
            # the tests poll fast from one address; tests/test_security.py checks the limits on its own API
            "ERASEPRO_RATE_LIMIT": "0", "ERASEPRO_RATE_LIMIT_ADDRESS": "0", "ERASEPRO_RATE_LIMIT_UNAUTHENTICATED": "0",
            "ERASEPRO_WEBHOOK_BACKOFF_S": "0.5",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.r = redis.Redis.from_url(self.redis_server.url, decode_responses=True)
        self.start_worker()
        self.port = free_port()
        self.api = self._uvicorn(self.env, self.port, "api")
        wait_for(lambda: self._get("/readyz") == 200, "the API and a worker to be ready")
        return self

    def _uvicorn(self, env: dict[str, str], port: int, name: str) -> subprocess.Popen:
        return spawn([sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port),
                      "--log-level", "warning", "--http", PROTOCOL], env=env, log_path=self.logs / f"{name}.log",
                     cwd=str(ROOT))

    def _get(self, path: str, port: int | None = None) -> int:
        try:
            return httpx.get(f"http://127.0.0.1:{port or self.port}{path}", timeout=5).status_code
        except httpx.HTTPError:
            return 0

    def start_worker(self) -> None:
        self.worker = spawn([sys.executable, "-m", "worker", "--queues", "erase,generate,webhooks"], env=self.env,
                            log_path=self.logs / "worker.log", cwd=str(ROOT))
        # Ready when its heartbeat is in the workers set (after torch and diffusers imported).
        wait_for(lambda: self.worker.poll() is not None or self.worker_alive(), "the worker to start")
        assert self.worker.poll() is None, (self.logs / "worker.log").read_text()[-3000:]

    def worker_alive(self) -> bool:
        name = f"erasepro-{os.uname().nodename}-{self.worker.pid}"
        return self.r.zscore("erasepro:workers", name) is not None

    def kill_worker(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the worker."""
        self.worker.kill()
        self.worker.wait()

    def restart_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            stop_process(self.worker, grace_s=20, second_signal_s=5)
        self.start_worker()

    def start_fuzz_api(self) -> str:
        """A second API process on another Redis database that no worker reads: fuzzed requests that pass
        validation are queued but never run (so the fuzzer cannot load the worker with huge jobs)."""
        if self.fuzz_api is None:
            port = free_port()
            env = {**self.env, "REDIS_URL": self.redis_server.url.rsplit("/", 1)[0] + "/1",
                   "ERASEPRO_DATA_DIR": str(self.tmp / "fuzz-data"), "ERASEPRO_GENERATE_WAIT_S": "0",
                   "ERASEPRO_TENANT_MAX_ACTIVE": f"{FUZZ_LIMITED_TENANT}:{FUZZ_LIMIT}"}
            self.fuzz_api = self._uvicorn(env, port, "fuzz-api")
            self.fuzz_port = port
            wait_for(lambda: self._get("/healthz", port) == 200, "the fuzz API to start")
        return f"http://127.0.0.1:{self.fuzz_port}"

    # ------------------------------------------------------------------------------------------- stop
    def extra_processes(self) -> list[subprocess.Popen]:
        """Processes a subclass started besides the API and the worker (stopped with them)."""
        return []

    def stop(self) -> None:
        # all at once, briefly: a test ends with nothing left to finish (a job still running is cut: cold shutdown)
        stop_processes([p for p in (self.api, self.fuzz_api, self.worker, *self.extra_processes()) if p is not None],
                       grace_s=3, second_signal_s=2)
        if self.r is not None:
            self.r.close()
        if self.redis_server is not None:
            self.redis_server.stop()
        self.api = self.fuzz_api = self.worker = self.redis_server = None
        if not os.environ.get("ERASEPRO_KEEP_TEST_DIRS"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---------------------------------------------------------------------------------------- clients
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, tenant: str | None = "acme", **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {KEYS[tenant]}"} if tenant else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=180, **kw)

    def log_tail(self, name: str = "worker", n: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""


_STACK: Stack | None = None


def get_stack() -> Stack:
    """The process-wide stack (started on first use, stopped at exit)."""
    global _STACK
    if _STACK is None:
        stack = Stack()
        try:
            stack.start()
        except BaseException:
            stack.stop()
            raise
        _STACK = stack
        atexit.register(stack.stop)
    return _STACK


@pytest.fixture(scope="session")
def svc() -> Stack:
    """The running service (see :class:`Stack`)."""
    return get_stack()


@pytest.fixture(scope="session")
def acme(svc: Stack):
    with svc.client("acme") as c:
        yield c


@pytest.fixture(scope="session")
def globex(svc: Stack):
    with svc.client("globex") as c:
        yield c


def submit(client: httpx.Client, body: dict, **headers: str) -> str:
    r = client.post("/v1/erasures", json=body, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def wait_status(client: httpx.Client, job_id: str, statuses: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
                what: str = "") -> dict:
    """Poll ``GET /v1/erasures/{id}`` until its status is one of ``statuses``; returns the view."""
    def check() -> dict | None:
        view = client.get(f"/v1/erasures/{job_id}").json()
        return view if view.get("status") in statuses else None

    return wait_for(check, what or f"erasure {job_id} to reach {statuses}", every=0.1)


@pytest.fixture(scope="session")
def finished(svc: Stack, acme: httpx.Client) -> dict:
    """One succeeded erasure of 'a cat' -> 'a dog' on the tiny model, owned by tenant acme."""
    job_id = submit(acme, SHORT_SPEC)
    view = wait_status(acme, job_id)
    assert view["status"] == "succeeded", (view, svc.log_tail())
    return view
