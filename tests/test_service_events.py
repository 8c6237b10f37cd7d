"""The event log over HTTP against the real stack: JSON pages, and an SSE client that disconnects and resumes
with Last-Event-ID without missing or repeating an event; a killed worker's job is recorded failed (and its
``erasure.failed`` logged) by the reaper on its timer, while no client reads the job."""

from __future__ import annotations

import json

import httpx
import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import LONG_SPEC, SHORT_SPEC, Stack, submit, wait_for, wait_status  # noqa: E402

pytest_plugins = ["service_fixtures"]


def read_sse(client: httpx.Client, path: str, last_event_id: str | None = None,
             stop_after: int | None = None) -> list[dict]:
    """Read an SSE stream with a plain HTTP client; stop after ``stop_after`` events (disconnecting)."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    events: list[dict] = []
    current: dict = {}
    with client.stream("GET", path, headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.read()
        for line in r.iter_lines():
            if line == "":
                if "data" in current:
                    events.append(current)
                    if stop_after is not None and len(events) >= stop_after:
                        return events
                current = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                current[field] = value.lstrip(" ")
    return events


def test_events_json_and_sse_resume(svc: Stack, acme: httpx.Client) -> None:
    job_id = submit(acme, SHORT_SPEC)
    path = f"/v1/erasures/{job_id}/events"
    first = read_sse(acme, path, stop_after=2)  # disconnect after two events
    assert [e["event"] for e in first] == ["erasure.created", "erasure.started"]
    rest = read_sse(acme, path, last_event_id=first[-1]["id"])  # resumes; ends after the terminal event
    streamed = first + rest
    assert streamed[-1]["event"] == "erasure.succeeded", streamed
    page = acme.get(path).json()
    assert [e["id"] for e in page["items"]] == [e["id"] for e in streamed]  # nothing missed, nothing repeated
    assert [json.loads(e["data"])["type"] for e in streamed] == [e["type"] for e in page["items"]]
    assert any(e["type"] == "erasure.progress" for e in page["items"])
    assert page["items"][0]["created_at"].endswith("Z")
    two = acme.get(path, params={"limit": 2}).json()
    after = acme.get(path, params={"after": two["next_cursor"]}).json()
    assert [e["id"] for e in two["items"] + after["items"]] == [e["id"] for e in page["items"]]
    # a finished job's stream replays and ends; other tenants see nothing
    assert read_sse(acme, path)[-1]["event"] == "erasure.succeeded"
    with svc.client("globex") as other:
        assert other.get(path).status_code == 404
    assert acme.get(path, params={"after": "nope"}).status_code == 422


def test_reaper_records_a_killed_workers_job_unread(svc: Stack, acme: httpx.Client) -> None:
    job_id = submit(acme, LONG_SPEC)
    wait_for(lambda: svc.r.hget(f"erasepro:job:{job_id}", "status") == "running", "the job to start")
    svc.kill_worker()
    try:
        svc.start_worker()  # its heartbeat thread reaps; nobody calls the API for this job
        rec = wait_for(lambda: (lambda h: h if h.get("status") == "failed" else None)(
            svc.r.hgetall(f"erasepro:job:{job_id}")), "the reaper to record the job failed", deadline_s=60)
        assert "stopped responding" in rec["error"]
        entries = svc.r.xrange(f"erasepro:events:{job_id}")
        assert entries[-1][1]["type"] == "erasure.failed"
    finally:
        if not svc.worker_alive():
            svc.restart_worker()
    assert wait_status(acme, job_id)["status"] == "failed"


def test_metadata_returned_stored_and_filterable(svc: Stack, acme: httpx.Client) -> None:
    tag = f"run-{svc.port}"
    red = submit(acme, {**SHORT_SPEC, "metadata": {"team": "red", "run": tag}})
    blue = submit(acme, {**SHORT_SPEC, "metadata": {"team": "blue", "run": tag}})
    for job_id, team in ((red, "red"), (blue, "blue")):
        view = wait_status(acme, job_id)
        assert view["status"] == "succeeded" and view["metadata"] == {"team": team, "run": tag}, view
    manifest = json.loads((svc.data_dir / "tenants" / "acme" / "erasures" / red / "manifest.json").read_text())
    assert manifest["metadata"] == {"team": "red", "run": tag}
    got = acme.get("/v1/erasures", params={"metadata[run]": tag, "metadata[team]": "red"}).json()
    assert [v["id"] for v in got["items"]] == [red]
    both = acme.get("/v1/erasures", params={"metadata[run]": tag, "status": "succeeded", "limit": 1}).json()
    more = acme.get("/v1/erasures", params={"metadata[run]": tag, "status": "succeeded",
                                            "cursor": both["next_cursor"]}).json()
    assert [v["id"] for v in both["items"] + more["items"]] == [blue, red]
    assert acme.get("/v1/erasures", params={"metadata[run]": tag, "status": "failed"}).json()["items"] == []
    created = acme.get(f"/v1/erasures/{red}/events").json()["items"][0]
    assert created["type"] == "erasure.created" and created["data"]["metadata"]["team"] == "red"
    for bad in ({"bad key!": "x"}, {f"k{i}": "v" for i in range(17)}, {"k": "v" * 257}, {"k": 1}):
        r = acme.post("/v1/erasures", json={**SHORT_SPEC, "metadata": bad})
        assert r.status_code == 422 and "metadata" in r.text, (bad, r.text)
    assert acme.get("/v1/erasures", params={"metadata[no good]": "x"}).status_code == 422
    assert acme.get("/v1/erasures", params={"status": "weird"}).status_code == 422
