"""Cancellation, timeouts, a worker killed mid-job, Redis flushed: the job states stay true and no partial
checkpoint is ever served.

The long job (:data:`LONG_SPEC`) would run for minutes on the tiny model; each test interrupts it early, so
nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import LEASE_TTL_S, LONG_SPEC, SHORT_SPEC, Stack, submit, wait_for, wait_status  # noqa: E402

pytest_plugins = ["service_fixtures"]  # the running service (shared by every test_service_* module)


def _running(client: httpx.Client, job_id: str) -> dict:
    """Wait until the worker has started the job (its lease is held and progress moves past loading)."""
    def check() -> dict | None:
        view = client.get(f"/v1/erasures/{job_id}").json()
        assert view["status"] in ("queued", "running"), view
        return view if view["status"] == "running" and view["progress"]["stage"] not in (None, "loading model") \
            else None

    return wait_for(check, f"{job_id} to be running", every=0.05)


def _no_checkpoint(svc: Stack, client: httpx.Client, job_id: str, tenant: str = "acme") -> None:
    erasures = svc.data_dir / "tenants" / tenant / "erasures"
    assert not (erasures / job_id).exists()
    assert client.get(f"/v1/erasures/{job_id}/checkpoint").status_code == 409
    assert client.post(f"/v1/erasures/{job_id}/generate", json={"prompt": "x"}).status_code == 409


def test_cancel_queued_and_running_jobs(svc: Stack, acme: httpx.Client) -> None:
    long_id = submit(acme, LONG_SPEC)
    _running(acme, long_id)
    queued_id = submit(acme, SHORT_SPEC)  # one worker, busy: this one waits in the queue
    assert acme.get(f"/v1/erasures/{queued_id}").json()["status"] == "queued"
    busy = acme.delete(f"/v1/erasures/{long_id}")  # DELETE removes finished jobs only: it names the way to cancel
    assert busy.status_code == 409 and f"POST /v1/erasures/{long_id}/cancel" in busy.json()["detail"], busy.text
    r = acme.post(f"/v1/erasures/{queued_id}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    r = acme.post(f"/v1/erasures/{long_id}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    view = wait_status(acme, long_id)
    assert view["status"] == "cancelled", view
    assert "cancelled while" in view["error"]
    assert acme.get(f"/v1/erasures/{queued_id}").json()["status"] == "cancelled"
    for jid in (long_id, queued_id):
        _no_checkpoint(svc, acme, jid)
    # the worker skips the cancelled queued job and carries on with new work
    after = submit(acme, SHORT_SPEC)
    assert wait_status(acme, after)["status"] == "succeeded"
    assert acme.get(f"/v1/erasures/{queued_id}").json()["status"] == "cancelled"
    # deleting a cancelled job removes its record
    assert acme.delete(f"/v1/erasures/{queued_id}").status_code == 204
    assert acme.get(f"/v1/erasures/{queued_id}").status_code == 404


def test_job_timeout_fails_with_a_readable_message(svc: Stack, acme: httpx.Client) -> None:
    job_id = submit(acme, {**LONG_SPEC, "timeout_s": 1})
    view = wait_status(acme, job_id)
    assert view["status"] == "failed", view
    assert "timed out" in view["error"]
    _no_checkpoint(svc, acme, job_id)
    assert wait_status(acme, submit(acme, SHORT_SPEC))["status"] == "succeeded"


def test_worker_killed_mid_job(svc: Stack, acme: httpx.Client) -> None:
    job_id = submit(acme, LONG_SPEC)
    _running(acme, job_id)
    # a half-written checkpoint directory, as a crash during the save would leave behind
    erasures = svc.data_dir / "tenants" / "acme" / "erasures"
    partial = erasures / f".tmp-{job_id}-deadbeef"
    partial.mkdir(parents=True)
    (partial / "delta.safetensors").write_bytes(b"\0" * 100)
    svc.kill_worker()
    try:
        view = wait_status(acme, job_id, what="the lease of the killed worker to expire")
        assert view["status"] == "failed", view
        assert "stopped responding" in view["error"]
        _no_checkpoint(svc, acme, job_id)
        assert job_id not in [j["id"] for j in acme.get("/v1/erasures", params={"limit": 100}).json()["items"]
                              if j["status"] == "succeeded"]
        # no worker is alive (this stack does not supervise its worker; `serve` does: test_service_faults):
        # /readyz says so once the last heartbeat is older than the lease TTL
        ready = wait_for(lambda: (lambda r: r if r.status_code == 503 else None)(
            httpx.get(f"{svc.base_url}/readyz")), "/readyz to report no worker", deadline_s=2 * LEASE_TTL_S)
        body = ready.json()
        assert (body["ready"], body["redis"], body["workers"]) == (False, "ok", 0), body
    finally:
        svc.restart_worker()
    assert httpx.get(f"{svc.base_url}/readyz").status_code == 200
    assert not partial.exists()  # the new worker removed the orphaned temporary directory
    assert wait_status(acme, submit(acme, SHORT_SPEC))["status"] == "succeeded"
    assert acme.get(f"/v1/erasures/{job_id}").json()["status"] == "failed"  # not resurrected


def test_redis_flush_keeps_finished_checkpoints(svc: Stack, acme: httpx.Client, finished: dict) -> None:
    job_id = finished["id"]
    before = acme.get(f"/v1/erasures/{job_id}/checkpoint")
    assert before.status_code == 200
    svc.r.flushall()
    assert svc.r.dbsize() == 0
    view = acme.get(f"/v1/erasures/{job_id}").json()
    assert view["status"] == "succeeded"
    assert view["report"] == finished["report"] and view["spec"] == finished["spec"]
    assert job_id in [j["id"] for j in acme.get("/v1/erasures", params={"limit": 100}).json()["items"]]
    after = acme.get(f"/v1/erasures/{job_id}/checkpoint")
    assert after.status_code == 200
    assert hashlib.sha256(after.content).hexdigest() == finished["artifacts"]["delta.safetensors"]["sha256"]
    assert after.content == before.content
    gen = acme.post(f"/v1/erasures/{job_id}/generate", json={"prompt": "a cat", "steps": 2, "width": 32, "height": 32})
    assert gen.status_code == 200 and gen.headers["content-type"] == "image/png"
    # the service keeps working after the flush (the worker re-registers itself)
    wait_for(lambda: httpx.get(f"{svc.base_url}/readyz").status_code == 200, "the worker to heartbeat again")
    assert wait_status(acme, submit(acme, SHORT_SPEC))["status"] == "succeeded"
