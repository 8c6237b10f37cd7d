"""At-least-once jobs (issue 21) against ``erasepro serve`` with ``ERASEPRO_JOB_ATTEMPTS=2``: a worker killed
mid-erasure leads to the job succeeding on the replacement worker, with ``attempt`` 2 in its record and an
``erasure.requeued`` event, exactly one complete checkpoint and nothing partial; a worker that dies between RQ's
dequeue and the job's start (after RQ's bookkeeping: the job in its registries) gets its job re-queued too; a
job whose runs are used up fails saying so."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import LONG_SPEC, SHORT_SPEC, start_serve, submit, wait_for, wait_status  # noqa: E402
from test_service_faults import EXTRA_ENV, Served  # noqa: E402

pytestmark = [pytest.mark.faults,
              pytest.mark.skipif(not Path("/proc").is_dir(), reason="process checks read /proc")]


# long enough to be killed mid-solve, short enough to run twice on a loaded CPU (a fifth of LONG_SPEC's columns)
MEDIUM_SPEC = {**LONG_SPEC, "edits": LONG_SPEC["edits"][:200]}


class Retrying(Served):
    def start(self) -> None:
        # serve's supervisor sees a killed worker at once; a longer lease keeps a live worker starved of CPU (this
        # test's machine is shared) from being taken for dead, which would re-queue its job beside it
        self.proc = start_serve(self.tmp, self.port, {**EXTRA_ENV, "ERASEPRO_JOB_ATTEMPTS": "2",
                                                      "ERASEPRO_LEASE_TTL_S": "20"})
        wait_for(lambda: self.proc.poll() is not None or self.ready() == 200, "serve to be ready")
        assert self.proc.poll() is None, self.log()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Retrying]:
    s = Retrying(tmp_path_factory.mktemp("retry"))
    s.start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.stop()


def _events(c: httpx.Client, job_id: str) -> list[dict]:
    return c.get(f"/v1/erasures/{job_id}/events", params={"limit": 500}).json()["items"]


def _kill_while_solving(served: Retrying, c: httpx.Client, job_id: str, started_before: int) -> None:
    """SIGKILL the worker once this run of the job is inside the solve."""
    def solving() -> bool:
        runs = [e for e in _events(c, job_id) if e["type"] == "erasure.started"]
        view = c.get(f"/v1/erasures/{job_id}").json()
        return len(runs) > started_before and view["status"] == "running" and view["progress"]["fraction"] > 0.05

    wait_for(solving, f"run {started_before + 1} of {job_id} to be solving", every=0.05)
    os.kill(served.worker_pid(), signal.SIGKILL)


def _one_checkpoint(served: Retrying, job_id: str) -> None:
    root = served.tmp / "data" / "tenants" / "acme" / "erasures"
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")], "a partial checkpoint was left"
    files = sorted(p.name for p in (root / job_id).iterdir())
    assert files == ["delta.safetensors", "manifest.json"], files
    manifest = json.loads((root / job_id / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((root / job_id / name).read_bytes()).hexdigest() == entry["sha256"]


def test_worker_killed_mid_erasure_succeeds_on_the_replacement(served: Retrying) -> None:
    with served.client() as c:
        job_id = submit(c, MEDIUM_SPEC)
        _kill_while_solving(served, c, job_id, 0)
        view = wait_status(c, job_id)
        assert view["status"] == "succeeded", (view, served.log())
        assert view["attempt"] == 2
        types = [e["type"] for e in _events(c, job_id)]
        assert types.count("erasure.started") == 2 and types.count("erasure.succeeded") == 1, types
        requeued = [e for e in _events(c, job_id) if e["type"] == "erasure.requeued"]
        assert len(requeued) == 1 and requeued[0]["data"]["attempt"] == 2
        assert "died" in requeued[0]["data"]["reason"]
        assert "erasure.failed" not in types
        _one_checkpoint(served, job_id)
        r = c.get(f"/v1/erasures/{job_id}/checkpoint")
        assert hashlib.sha256(r.content).hexdigest() == view["artifacts"]["delta.safetensors"]["sha256"]
        assert c.delete(f"/v1/erasures/{job_id}").status_code == 204


def test_the_attempts_run_out(served: Retrying) -> None:
    with served.client() as c:
        job_id = submit(c, LONG_SPEC)  # never runs to its end: long, so each run is caught mid-solve
        _kill_while_solving(served, c, job_id, 0)
        wait_for(lambda: served.ready() == 200, "the replacement worker")
        _kill_while_solving(served, c, job_id, 1)
        view = wait_status(c, job_id)
        assert view["status"] == "failed" and view["attempt"] == 2, view
        assert "attempt 2 of 2: no attempts left" in view["error"]
        assert not (served.tmp / "data" / "tenants" / "acme" / "erasures" / job_id).exists()
        wait_for(lambda: served.ready() == 200, "the next replacement worker")


def test_a_job_dequeued_by_a_worker_that_died_is_requeued(served: Retrying) -> None:
    """The worker is frozen (SIGSTOP); its pending dequeue, if any, takes the job; the test then leaves RQ's state as a
    worker that dequeued and prepared the job and died before the job function started it (the job in the
    intermediate list and the started registry, under a worker that no longer beats), and kills the frozen worker
    so that it cannot run it. The reaper must queue it again; the replacement worker runs it."""
    r = served.redis_client()
    pid = served.worker_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        with served.client() as c:
            job_id = submit(c, SHORT_SPEC)
            time.sleep(2)  # a dequeue pending on the server when the worker froze takes the job now
            r.lrem("rq:queue:erase", 0, job_id)  # otherwise the test plays the dequeue
            r.rpush("rq:queue:erase:intermediate", job_id)
            r.hset(f"rq:job:{job_id}", mapping={"worker_name": "erasepro-gone-4242", "status": "started"})
            r.zadd("rq:wip:erase", {f"{job_id}:dead-execution": time.time() + 3600})
            os.kill(pid, signal.SIGKILL)
            view = wait_status(c, job_id)
            assert view["status"] == "succeeded" and view["attempt"] == 2, (view, served.log())
            requeued = [e for e in _events(c, job_id) if e["type"] == "erasure.requeued"]
            assert len(requeued) == 1 and "before starting it" in requeued[0]["data"]["reason"]
            assert job_id not in r.lrange("rq:queue:erase:intermediate", 0, -1)
            assert not [m for m in r.zrange("rq:wip:erase", 0, -1) if m.startswith(job_id)]
            _one_checkpoint(served, job_id)
            assert c.delete(f"/v1/erasures/{job_id}").status_code == 204
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        r.close()
