"""``erasepro serve`` on the embedded defaults: embedded Redis + a worker beside the API; SIGTERM/SIGINT stop
everything (no stray processes); a restart finds the finished checkpoint."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import SERVE_KEY, SHORT_SPEC, alive, descendants, start_serve, submit, wait_for, wait_status  # noqa: E402

from app.embedded import free_port  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="process-tree checks read /proc")


def test_serve_embedded_shutdown_and_restart(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {SERVE_KEY}"}

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
