"""``erasepro serve`` on the embedded defaults: embedded Redis + a worker beside the API; SIGTERM/SIGINT stop
everything (no stray processes); a restart finds the finished checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import ROOT, SHORT_SPEC, submit, wait_for, wait_status  # noqa: E402

from app.embedded import free_port  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="process-tree checks read /proc")


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


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_serve(tmp: Path, port: int) -> subprocess.Popen:
    from erasepro_core.pipeline import save_pipeline
    from erasepro_core.tiny import tiny_sd_pipeline

    if not (tmp / "tiny" / "model_index.json").is_file():
        save_pipeline(tiny_sd_pipeline(seed=0), tmp / "tiny")
        (tmp / "models.toml").write_text(f'[models.tiny]\npath = "{tmp / "tiny"}"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(ERASEPRO_DATA_DIR=str(tmp / "data"), ERASEPRO_BASE_MODELS=str(tmp / "models.toml"),
               ERASEPRO_API_KEYS="acme:serve-test-key-0123456789", ERASEPRO_BUNDLED="0",
               PYTHONPATH=str(ROOT))
    log = open(tmp / "serve.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen([sys.executable, "-m", "erasepro_core.cli", "serve", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def test_serve_embedded_shutdown_and_restart(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": "Bearer serve-test-key-0123456789"}

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    serve = start_serve(tmp_path, port)
    try:
        wait_for(lambda: serve.poll() is not None or ready(), "serve to be ready")
        assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        children = descendants(serve.pid)
        assert len(children) >= 2  # the embedded redis-server and the worker
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            job_id = submit(c, SHORT_SPEC)
            assert wait_status(c, job_id)["status"] == "succeeded"
            digest = c.get(f"/v1/erasures/{job_id}").json()["artifacts"]["delta.safetensors"]["sha256"]
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(120) == 0, (tmp_path / "serve.log").read_text()[-3000:]
        wait_for(lambda: not any(alive(p) for p in children), "serve's children to exit")
    finally:
        if serve.poll() is None:
            serve.kill()

    serve = start_serve(tmp_path, port)
    try:
        wait_for(lambda: serve.poll() is not None or ready(), "serve to be ready again")
        children = descendants(serve.pid)
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            view = c.get(f"/v1/erasures/{job_id}").json()
            assert view["status"] == "succeeded"
            assert job_id in [j["id"] for j in c.get("/v1/erasures").json()["items"]]
            r = c.get(f"/v1/erasures/{job_id}/checkpoint")
            assert r.status_code == 200 and r.headers["etag"] == f'"{digest}"'
        serve.send_signal(signal.SIGINT)
        assert serve.wait(120) == 0
        wait_for(lambda: not any(alive(p) for p in children), "serve's children to exit")
    finally:
        if serve.poll() is None:
            serve.kill()
    assert "shutting down" in (tmp_path / "serve.log").read_text()
