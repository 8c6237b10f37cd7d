"""Fault injection against ``erasepro serve`` (embedded Redis with its password, one supervised worker).

What the probe of issue 9 did, as tests: SIGKILL the worker mid-erasure and mid-generation, FLUSHALL Redis,
fill the data filesystem (a 512 KiB tmpfs mounted over one tenant's checkpoints; skipped where mounting is not
permitted), a slow client, SIGTERM serve mid-job and start it again. After every fault: nothing that succeeded
is lost (each checkpoint still downloads with its sha256), nothing partial is served (every checkpoint
directory is complete, no temporary directory is left), and the service recovers without a restart.
Run with ``-m faults`` alone; ``.ci/run`` runs them with everything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import (  # noqa: E402
    LONG_SPEC,
    SERVE_KEY,
    SHORT_SPEC,
    descendants,
    proc_state,
    start_serve,
    submit,
    wait_for,
    wait_status,
)

from app.embedded import free_port  # noqa: E402

pytestmark = [pytest.mark.faults,
              pytest.mark.skipif(not Path("/proc").is_dir(), reason="process checks read /proc")]

FULL_TENANT, FULL_KEY = "full", "full-tenant-key-0123456789"
TMPFS_BYTES = 512 * 1024
EXTRA_ENV = {"ERASEPRO_BUNDLED": "1", "ERASEPRO_LEASE_TTL_S": "5", "ERASEPRO_HEADER_TIMEOUT_S": "2",
             "ERASEPRO_API_KEYS": f"acme:{SERVE_KEY},{FULL_TENANT}:{FULL_KEY}"}
SLOW_GEN = {"prompt": "a slow one", "steps": 150, "width": 128, "height": 128}  # seconds on the tiny model


class Served:
    """One ``erasepro serve`` process and what the tests learn about it (the ledger of succeeded jobs)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.port = tmp, free_port()
        self.proc: subprocess.Popen | None = None
        self.ledger: dict[str, tuple[str, str]] = {}  # job id -> (tenant key, sha256 of its delta)
        self.faults: list[str] = []
        self.statuses: dict[int, int] = {}  # every response any test here received, by status

    def _count(self, response: httpx.Response) -> None:
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str = SERVE_KEY) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {key}"}, timeout=120,
                            event_hooks={"response": [self._count]})

    def ready(self) -> int:
        try:
            r = httpx.get(f"{self.base}/readyz", timeout=5)
        except httpx.HTTPError:
            return 0
        if r.status_code != 503:  # 503 is /readyz's truthful answer while no worker lives
            self._count(r)
        return r.status_code

    def start(self) -> None:
        self.proc = start_serve(self.tmp, self.port, EXTRA_ENV)
        wait_for(lambda: self.proc.poll() is not None or self.ready() == 200, "serve to be ready")
        assert self.proc.poll() is None, self.log()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)

    def log(self) -> str:
        return (self.tmp / "serve.log").read_text(errors="replace")[-4000:]

    def worker_pid(self) -> int:
        """The supervised worker itself: not its heavy lane (``--queues heavy``, a child that restarts on its own)
        nor RQ's work horse (a fork with the same command line), whose deaths leave /readyz at 200."""
        def find() -> int | None:
            workers: dict[int, int] = {}  # pid -> parent pid
            for pid in descendants(self.proc.pid):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if (b"worker" in cmd and b"-m" in cmd and b"heavy" not in cmd
                        and proc_state(pid) not in (None, "Z")):
                    workers[pid] = ppid
            tops = [pid for pid, ppid in workers.items() if ppid not in workers]
            return tops[0] if len(tops) == 1 else None

        return wait_for(find, "a worker process")

    def zombies(self) -> list[int]:
        return [p for p in descendants(self.proc.pid) if proc_state(p) == "Z"]

    def redis_client(self) -> redis.Redis:
        password = (self.tmp / "data" / "redis" / "password").read_text().strip()
        port = int(next(ln.split()[1] for ln in (self.tmp / "data" / "redis" / "redis.conf").read_text().splitlines()
                        if ln.startswith("port ")))
        return redis.Redis(host="127.0.0.1", port=port, password=password, decode_responses=True)

    def erase_ok(self, key: str = SERVE_KEY, target: str = "a cat") -> str:
        """A new erasure succeeds; it joins the ledger."""
        with self.client(key) as c:
            job_id = submit(c, {**SHORT_SPEC, "edits": [{"target": target, "anchor": "a dog"}]})
            view = wait_status(c, job_id)
            assert view["status"] == "succeeded", (view, self.log())
            self.ledger[job_id] = (key, view["artifacts"]["delta.safetensors"]["sha256"])
        return job_id

    def check_nothing_lost(self) -> None:
        """Every succeeded job still downloads with its sha256; every checkpoint on disk is complete."""
        for job_id, (key, sha) in self.ledger.items():
            with self.client(key) as c:
                assert c.get(f"/v1/erasures/{job_id}").json()["status"] == "succeeded", job_id
                r = c.get(f"/v1/erasures/{job_id}/checkpoint")
                assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha, job_id
        for erasures in (self.tmp / "data" / "tenants").glob("*/erasures"):
            for d in erasures.iterdir():
                assert not d.name.startswith(".tmp-"), f"partial checkpoint left: {d}"
                if d.name.startswith("."):
                    continue
                manifest = json.loads((d / "manifest.json").read_text())
                for name, entry in manifest["files"].items():
                    assert hashlib.sha256((d / name).read_bytes()).hexdigest() == entry["sha256"], d / name


def _mount_tmpfs(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(path)],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("faults"))
    s.mounted = _mount_tmpfs(s.tmp / "data" / "tenants" / FULL_TENANT / "erasures")
    s.start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.stop()
        if s.mounted:
            subprocess.run(["umount", "-l", str(s.tmp / "data" / "tenants" / FULL_TENANT / "erasures")],
                           capture_output=True, timeout=20)
        print(f"\nfaults injected: {len(s.faults)} ({', '.join(s.faults)}); succeeded jobs kept: {len(s.ledger)}; "
              f"responses {sum(s.statuses.values())}: {dict(sorted(s.statuses.items()))}")


def _running(c: httpx.Client, url: str) -> dict:
    return wait_for(lambda: (lambda v: v if v["status"] == "running" else None)(c.get(url).json()),
                    f"{url} to run", every=0.05)


# ---------------------------------------------------------------------------------------------- the bars
def test_door_bars_on_the_bundled_model(served: Served) -> None:
    password = (served.tmp / "data" / "redis" / "password").read_text().strip()
    for log in [served.tmp / "serve.log", *(served.tmp / "data" / "logs").glob("*.log")]:
        assert password not in log.read_text(errors="replace"), f"the Redis password leaked into {log}"
    with served.client() as c:
        r = c.post("/v1/base-models/bundled/generate", json={"prompt": "x", "width": 2048, "height": 2048})
        assert r.status_code == 422 and "exceeds 64" in r.text, r.text
        r = c.post("/v1/erasures", json={"base_model": "bundled", "edits": [{"target": "circle"}],
                                         "options": {"schedule": "front", "layers": [999]}})
        assert r.status_code == 422 and "layers" in r.text, r.text
        r = c.post("/v1/erasures", json={"base_model": "bundled", "edits": [{"target": "circle"}],
                                         "options": {"schedule": "front", "layers": [3]}})
        assert r.status_code == 422 and "3 layers" in r.text, r.text  # its config.json: 3 layers
        r = c.post("/v1/erasures", json={"base_model": "bundled", "edits": [{"target": "circle"}],
                                         "options": {"templates": ["{} {x}"]}})
        assert r.status_code == 422 and "templates" in r.text, r.text
    served.erase_ok()


def test_worker_killed_mid_erasure_is_replaced(served: Served) -> None:
    with served.client() as c:
        job_id = submit(c, LONG_SPEC)
        _running(c, f"/v1/erasures/{job_id}")
        old = served.worker_pid()
        os.kill(old, signal.SIGKILL)
        served.faults.append("SIGKILL worker mid-erase")
        seen = set()
        wait_for(lambda: seen.add(served.ready()) or 503 in seen, "/readyz to say no worker", every=0.05)
        view = wait_status(c, job_id, what="the killed worker's job to be recorded")
        assert view["status"] == "failed" and "died" in view["error"], view
        wait_for(lambda: served.ready() == 200, "a new worker")
        assert served.worker_pid() != old
        assert served.zombies() == []
        assert c.get(f"/v1/erasures/{job_id}/checkpoint").status_code == 409
    served.erase_ok(target="a hat")  # a new erasure succeeds without restarting serve
    served.check_nothing_lost()


def test_worker_killed_mid_generation_is_replaced(served: Served) -> None:
    with served.client() as c:
        r = c.post("/v1/base-models/tiny/generate", json=SLOW_GEN, params={"wait": 0})
        assert r.status_code == 202, r.text
        gid = r.json()["id"]
        _running(c, f"/v1/generations/{gid}")
        os.kill(served.worker_pid(), signal.SIGKILL)
        served.faults.append("SIGKILL worker mid-generate")
        view = wait_for(lambda: (lambda v: v if v["status"] == "failed" else None)(
            c.get(f"/v1/generations/{gid}").json()), "the generation to be recorded failed")
        assert "died" in view["error"]
        img = c.get(f"/v1/generations/{gid}/images")
        assert img.status_code == 409 and img.headers["content-type"] == "application/problem+json", img.text
        wait_for(lambda: served.ready() == 200, "a new worker")
        ok = c.post("/v1/base-models/tiny/generate", json={"prompt": "x", "steps": 2})
        assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
    assert served.zombies() == []
    served.check_nothing_lost()


def test_redis_flushall(served: Served) -> None:
    client = served.redis_client()
    try:
        assert client.flushall()
    finally:
        client.close()
    served.faults.append("FLUSHALL")
    served.check_nothing_lost()
    wait_for(lambda: served.ready() == 200, "the worker to heartbeat again")
    served.erase_ok(target="a cup")


def test_full_disk_fails_the_job_cleanly(served: Served) -> None:
    if not served.mounted:
        pytest.skip("cannot mount a tmpfs here (needs root): the full-disk fault is not injected")
    erasures = served.tmp / "data" / "tenants" / FULL_TENANT / "erasures"
    filler = erasures / ".filler"
    with open(filler, "wb", buffering=0) as f:  # fill it: the next write anywhere on it gets ENOSPC
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    served.faults.append("ENOSPC")
    try:
        with served.client(FULL_KEY) as c:
            job_id = submit(c, SHORT_SPEC)
            view = wait_status(c, job_id)
            assert view["status"] == "failed" and "No space left" in view["error"], view
            assert c.get(f"/v1/erasures/{job_id}/checkpoint").status_code == 409
        assert [p.name for p in erasures.iterdir()] == [".filler"]  # nothing partial left behind
    finally:
        filler.unlink()
    served.erase_ok(FULL_KEY, target="a pen")  # recovers once there is room
    served.check_nothing_lost()


def test_slow_header_client_is_dropped(served: Served) -> None:
    served.faults.append("slow headers")
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", served.port), timeout=20) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        s.settimeout(15)
        assert s.recv(100) == b""  # closed by the server, no reply
    assert time.monotonic() - start < 10
    assert served.ready() == 200


# serve gives a running job 10 s to finish on SIGTERM: since the encoder pass got faster, LONG_SPEC can finish
# inside that grace on a quiet machine, so this test uses a job of ~15–25 s (UCE, 1000 edits × 64 phrasings).
_WORDS = "big small red blue green old new dark bright soft hard warm cold tiny huge odd".split()
SHUTDOWN_SPEC = {
    "base_model": "tiny",
    "edits": [{"target": f"concept number {i}", "anchor": ""} for i in range(1000)],
    "method": "uce",
    "options": {"default_preserve": False, "templates": [f"{a} {b} {{}}" for a in _WORDS for b in _WORDS[:4]]},
}


def test_sigterm_mid_job_then_restart(served: Served) -> None:
    with served.client() as c:
        job_id = submit(c, SHUTDOWN_SPEC)
        _running(c, f"/v1/erasures/{job_id}")
    children = descendants(served.proc.pid)
    assert served.stop() == 0, served.log()
    served.faults.append("SIGTERM serve mid-job")
    wait_for(lambda: all(proc_state(p) in (None, "Z") for p in children), "serve's children to exit")
    served.start()
    with served.client() as c:
        view = c.get(f"/v1/erasures/{job_id}").json()
        if view["status"] == "succeeded":  # it finished inside the grace: then it must be whole and served
            r = c.get(f"/v1/erasures/{job_id}/checkpoint", params={"format": "delta"})
            assert r.status_code == 200 and r.headers.get("etag"), (r.status_code, r.text[:200])
        else:
            assert view["status"] == "failed" and "shut down" in view["error"], view
    served.check_nothing_lost()
    served.erase_ok(target="a sock")


def test_no_server_error_was_seen(served: Served) -> None:
    """Across every request of this module (503 from /readyz aside, which is its answer while no worker lives)."""
    assert sum(served.statuses.values()) > 50
    assert not [code for code in served.statuses if code >= 500], served.statuses
