"""The lifecycle module against a real redis-server: every transition writes its record and its event in one
step, the durable copy of the log survives FLUSHALL, the reaper records dead-worker jobs, and a worker cannot
succeed a job the reaper already declared lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.embedded import EmbeddedRedis
from erasepro_jobs import store
from erasepro_jobs.lifecycle import K_RUNNING, JobRef, Lifecycle, k_events


@pytest.fixture
def lc(embedded_redis: EmbeddedRedis, tmp_path: Path) -> Iterator[Lifecycle]:
    client = redis.Redis.from_url(embedded_redis.url, decode_responses=True)
    client.flushall()
    yield Lifecycle(client, tmp_path)
    client.close()


def _create(lc: Lifecycle, kind: str = "erasure", erasure_id: str = "") -> JobRef:
    job = JobRef(store.new_job_id(), kind, "acme", erasure_id)
    got = lc.create(job, fields={"base_model": "tiny", "erasure_id": erasure_id or None}, created=time.time(),
                    idem_key=None, body_hash="", idem_ttl_s=60, limit=0, data={"base_model": "tiny"})
    assert got == ""
    return job


def types(lc: Lifecycle, subject: str) -> list[str]:
    return [e["type"] for e in lc.events("acme", subject)]


def test_happy_path_records_and_logs_in_order(lc: Lifecycle) -> None:
    job = _create(lc)
    assert lc.start(job, "w1", 30, {}) == "running"
    assert lc.r.sismember(K_RUNNING, job.id)
    lc.progress(job, {"stage": "solve", "fraction": 0.5}, event=True)
    lc.progress(job, {"stage": "solve", "fraction": 0.51}, event=False)  # the record moves, the log does not
    assert lc.finish(job, "succeeded", report={"ok": 1}) == "ok"
    rec = lc.r.hgetall(store.k_job(job.id))
    assert rec["status"] == "succeeded" and '"fraction":0.51' in rec["progress"] and rec["report"] == '{"ok":1}'
    assert not lc.r.sismember(K_RUNNING, job.id) and not lc.r.exists(store.k_lease(job.id))
    assert types(lc, job.id) == ["erasure.created", "erasure.started", "erasure.progress", "erasure.succeeded"]
    # a second finish is refused and logs nothing
    assert lc.finish(job, "failed", error="late") == "succeeded"
    assert len(types(lc, job.id)) == 4
    # pagination: strictly after the cursor
    first_two = lc.events("acme", job.id, limit=2)
    rest = lc.events("acme", job.id, after=first_two[-1]["id"])
    assert [e["type"] for e in first_two + rest] == types(lc, job.id)


def test_generation_and_export_are_logged_on_their_erasure(lc: Lifecycle) -> None:
    erasure = _create(lc)
    gen = _create(lc, "generation", erasure.id)
    assert lc.start(gen, "w1", 30, {}) == "running"
    assert lc.finish(gen, "succeeded") == "ok"
    exp = _create(lc, "export", erasure.id)
    assert lc.start(exp, "w1", 30, {}) == "running"
    assert lc.finish(exp, "succeeded") == "ok"
    plain = _create(lc, "generation")  # of the base model: nothing to log it on
    assert lc.start(plain, "w1", 30, {}) == "running" and lc.finish(plain, "succeeded") == "ok"
    assert not lc.r.exists(k_events(plain.id)) and lc.events("acme", plain.id) == []
    events = lc.events("acme", erasure.id)
    assert [e["type"] for e in events] == ["erasure.created", "generation.succeeded", "checkpoint.exported"]
    assert events[1]["data"]["generation_id"] == gen.id and events[2]["data"]["export_id"] == exp.id


def test_log_survives_flushall(lc: Lifecycle) -> None:
    job = _create(lc)
    lc.start(job, "w1", 30, {})
    before = lc.events("acme", job.id)
    lc.r.flushall()
    assert not lc.r.exists(k_events(job.id))
    assert lc.events("acme", job.id) == before and len(before) == 2
    # Redis lost the record: the worker's finish is refused ('missing') and nothing is recreated
    assert lc.finish(job, "succeeded") == "missing"


def test_cancel_queued_is_logged_once(lc: Lifecycle) -> None:
    job = _create(lc)
    assert lc.cancel(job) == "cancelled"
    assert lc.cancel(job) == "cancelled"  # the status seen; no second event
    assert types(lc, job.id) == ["erasure.created", "erasure.cancelled"]
    assert lc.start(job, "w1", 30, {}) == "cancelled"


def test_reaper_fails_dead_worker_jobs_and_blocks_late_success(lc: Lifecycle) -> None:
    live, dead = _create(lc), _create(lc)
    lc.start(live, "w1", 30, {})
    lc.start(dead, "w2", 1, {})  # nobody refreshes this lease
    assert lc.reap() == 0
    time.sleep(1.2)
    assert lc.reap() == 1
    rec = lc.r.hgetall(store.k_job(dead.id))
    assert rec["status"] == "failed" and "stopped responding" in rec["error"]
    assert types(lc, dead.id)[-1] == "erasure.failed"
    assert lc.r.hget(store.k_job(live.id), "status") == "running"
    assert lc.finish(dead, "succeeded") == "failed"  # the dead worker's late success is refused
    assert lc.reap() == 0 and not lc.r.sismember(K_RUNNING, dead.id)


def test_release_fails_only_the_named_workers_jobs(lc: Lifecycle) -> None:
    a, b = _create(lc), _create(lc)
    lc.start(a, "w1", 30, {})
    lc.start(b, "w2", 30, {})
    assert lc.release(["w1"], "shut down") == 1
    assert lc.r.hget(store.k_job(a.id), "status") == "failed"
    assert lc.r.hget(store.k_job(b.id), "status") == "running"


def test_enqueue_failure_fails_a_queued_job(lc: Lifecycle) -> None:
    job = _create(lc)
    assert lc.finish(job, "failed", from_status="queued", error="could not enqueue: boom") == "ok"
    assert types(lc, job.id) == ["erasure.created", "erasure.failed"]
    assert lc.events("acme", job.id)[-1]["data"] == {"error": "could not enqueue: boom"}


# ------------------------------------------------------------------ the durable log goes through the artifact store
@pytest.fixture(params=["fs", "s3"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path):
    """One artifact store that two machines (two Lifecycles, each with its own data dir) share."""
    if request.param == "fs":
        from erasepro_jobs.storage import FileStorage

        return FileStorage(tmp_path / "shared")
    import uuid

    from erasepro_jobs.storage.s3 import S3Storage

    server = request.getfixturevalue("s3_server")
    return S3Storage(server.bucket, f"ev-{uuid.uuid4().hex[:8]}", tmp_path / "scratch", client=server.client())


def test_every_machine_reads_the_whole_log_from_the_shared_store(embedded_redis: EmbeddedRedis, tmp_path: Path,
                                                                  shared_store) -> None:
    """The API machine logs the creation, a worker machine the rest: after a Redis flush either one reads all of
    it from the store (each used to keep its own partial copy in its data dir), pages included; deleting the
    erasure removes the store's copy."""
    client = redis.Redis.from_url(embedded_redis.url, decode_responses=True)
    client.flushall()
    api = Lifecycle(client, tmp_path / "api", shared_store)
    worker = Lifecycle(client, tmp_path / "worker", shared_store)
    job = _create(api)
    assert worker.start(job, "w1", 30, {}) == "running"
    worker.progress(job, {"stage": "solve", "fraction": 0.5}, event=True)
    assert worker.finish(job, "succeeded") == "ok"
    before = api.events("acme", job.id)
    assert [e["type"] for e in before] == ["erasure.created", "erasure.started", "erasure.progress",
                                           "erasure.succeeded"]
    keys = [o.key for o in shared_store.list(f"tenants/acme/events/{job.id}")]
    assert len(keys) == 4 and keys == sorted(keys)
    assert not (tmp_path / "api" / "tenants").exists() and not (tmp_path / "worker" / "tenants").exists()
    client.flushall()
    for machine in (api, worker):
        assert machine.events("acme", job.id) == before
        page = machine.events("acme", job.id, after=before[0]["id"], limit=2)
        assert page == before[1:3]
    api.forget("acme", job.id)
    assert shared_store.list(f"tenants/acme/events/{job.id}") == [] and api.events("acme", job.id) == []
    client.close()


def test_a_log_written_as_json_lines_is_still_read(lc: Lifecycle, tmp_path: Path) -> None:
    """A log from before one object per event (``tenants/{t}/events/{id}.jsonl`` in the data dir) merges in."""
    import json

    job = _create(lc)
    old = {"id": "1000-0", "type": "erasure.created", "created_at": 1.0, "data": {"base_model": "tiny"}}
    legacy = tmp_path / "tenants" / "acme" / "events" / f"{job.id}.jsonl"
    legacy.write_text(json.dumps(old) + "\n" + '{"id": "cut mid-wri', encoding="utf-8")
    got = lc.events("acme", job.id)
    assert got[0] == old and [e["type"] for e in got[1:]] == ["erasure.created"]
    lc.forget("acme", job.id)
    assert not legacy.exists() and lc.events("acme", job.id) == []
