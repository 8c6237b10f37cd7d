"""Operations (issue 21) against the real stack: ``/metrics`` after a job (queue depth, the job histogram, HTTP
series) and who may read it; the audit log of the README journey at ``GET /v1/audit`` (admin keys only, filters,
cursor pagination, no secrets)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import ADMIN_KEY, KEYS, METRICS_TOKEN, SHORT_SPEC, Stack, submit, wait_status  # noqa: E402

pytest_plugins = ["service_fixtures"]


def scrape(base_url: str, token: str = METRICS_TOKEN) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of one scrape."""
    r = httpx.get(f"{base_url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_after_a_job(svc: Stack, acme: httpx.Client) -> None:
    before = scrape(svc.base_url)
    job_id = submit(acme, SHORT_SPEC)
    assert wait_status(acme, job_id)["status"] == "succeeded", svc.log_tail()
    after = scrape(svc.base_url)
    for q in ("erase", "generate", "heavy", "webhooks"):
        assert value(after, "erasepro_queue_depth", queue=q) is not None, q
    assert value(after, "erasepro_workers_alive") >= 1
    assert value(after, "erasepro_redis_up") == 1
    done = value(after, "erasepro_jobs_total", kind="erasure", status="succeeded")
    assert done >= (value(before, "erasepro_jobs_total", kind="erasure", status="succeeded") or 0) + 1
    for stage in ("queue", "load", "solve", "save", "run"):
        n = value(after, "erasepro_job_duration_seconds_count", kind="erasure", stage=stage)
        assert n >= 1, stage
        assert value(after, "erasepro_job_duration_seconds_bucket", kind="erasure", stage=stage, le="+Inf") == n
        assert value(after, "erasepro_job_duration_seconds_sum", kind="erasure", stage=stage) >= 0
    # route templates, never ids
    got = value(after, "erasepro_http_requests_total", method="GET", route="/v1/erasures/{job_id}", status="200")
    assert got >= 1
    assert not any(job_id in str(labels) for _, labels in after)
    # a metrics token or an admin key; a tenant's key is refused, and so is nothing
    assert httpx.get(f"{svc.base_url}/metrics").status_code == 401
    assert httpx.get(f"{svc.base_url}/metrics", headers={"Authorization": f"Bearer {KEYS['acme']}"}).status_code \
        == 401
    assert value(scrape(svc.base_url, ADMIN_KEY), "erasepro_workers_alive") >= 1
    acme.delete(f"/v1/erasures/{job_id}")


def test_gpu_memory_of_live_workers(svc: Stack) -> None:
    """What a CUDA worker's heartbeat publishes (erasepro_jobs.metrics.report_gpu; no GPU here) is scraped for
    live workers only."""
    from erasepro_jobs.metrics import k_gpu

    alive = svc.r.zrange("erasepro:workers", 0, -1)[0]
    values = {"cuda:0|allocated": 1024, "cuda:0|reserved": 2048, "cuda:0|total": 80 << 30}
    svc.r.hset(k_gpu(alive), mapping=values)
    svc.r.hset(k_gpu("erasepro-long-gone-1"), mapping=values)
    try:
        got = scrape(svc.base_url)
        assert value(got, "erasepro_gpu_memory_bytes", worker=alive, device="cuda:0", kind="total") == 80 << 30
        assert value(got, "erasepro_gpu_memory_bytes", worker=alive, device="cuda:0", kind="reserved") == 2048
        assert not any("long-gone" in str(labels) for _, labels in got)
    finally:
        svc.r.delete(k_gpu(alive), k_gpu("erasepro-long-gone-1"))


def test_metrics_show_a_waiting_job_in_its_queue(svc: Stack) -> None:
    """The fuzz API's queue has no worker: a submitted job waits there, and /metrics counts it."""
    base = svc.start_fuzz_api()
    depth = value(scrape(base), "erasepro_queue_depth", queue="erase") or 0
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEYS['bulk']}"}, timeout=30) as c:
        job_id = submit(c, SHORT_SPEC)
        assert value(scrape(base), "erasepro_queue_depth", queue="erase") == depth + 1
        assert c.post(f"/v1/erasures/{job_id}/cancel").status_code == 202  # cancelled while queued
    assert value(scrape(base), "erasepro_jobs_total", kind="erasure", status="cancelled") >= 1


def _audit(svc: Stack, key: str = ADMIN_KEY, **params: object) -> httpx.Response:
    return httpx.get(f"{svc.base_url}/v1/audit", params=params, headers={"Authorization": f"Bearer {key}"},
                     timeout=30)


def test_audit_lists_the_journey(svc: Stack, acme: httpx.Client) -> None:
    """The README journey (erase, wait, download, generate, delete), each request tagged with its own request
    id, is listed with tenant, key id, action, resource and result; no key, body or secret is in the log."""
    tag = uuid.uuid4().hex[:8]
    rid = {step: f"journey-{tag}-{step}" for step in ("erase", "download", "generate", "delete")}
    body = {**SHORT_SPEC, "webhook": "http://127.0.0.1:9/hook"}
    r = acme.post("/v1/erasures", json=body, headers={"X-Request-ID": rid["erase"]})
    assert r.status_code == 202 and r.headers["x-request-id"] == rid["erase"], r.text
    job_id, secret = r.json()["id"], r.json()["webhook_secret"]
    assert wait_status(acme, job_id)["status"] == "succeeded"
    assert acme.get(f"/v1/erasures/{job_id}/checkpoint", headers={"X-Request-ID": rid["download"]}).status_code == 200
    r = acme.post(f"/v1/erasures/{job_id}/generate", json={"prompt": "a cat", "steps": 2, "width": 32, "height": 32},
                  headers={"X-Request-ID": rid["generate"]})
    assert r.status_code == 200, r.text
    assert acme.delete(f"/v1/erasures/{job_id}", headers={"X-Request-ID": rid["delete"]}).status_code == 204
    assert acme.get("/v1/erasures", headers={"X-Request-ID": "not-audited"}).status_code == 200  # a read: no line

    page = _audit(svc, tenant="acme", limit=1000)
    assert page.status_code == 200, page.text
    mine = {e["request_id"]: e for e in page.json()["items"] if e["request_id"].startswith(f"journey-{tag}")}
    expected = {"erase": ("erasure.create", 202), "download": ("checkpoint.download", 200),
                "generate": ("generation.create", 200), "delete": ("erasure.delete", 204)}
    assert set(mine) == set(rid.values()), mine
    for step, (action, result) in expected.items():
        e = mine[rid[step]]
        assert (e["action"], e["result"], e["tenant"], e["resource"]) == (action, result, "acme", f"erasure/{job_id}")
        assert e["key_id"].startswith("env-") and e["at"].endswith("Z")
    # newest first; filters; cursor pagination walks the same lines
    ids = [e["id"] for e in page.json()["items"]]
    assert ids == sorted(ids, reverse=True)
    only = _audit(svc, action="checkpoint.download", request_id=rid["download"]).json()["items"]
    assert [e["request_id"] for e in only] == [rid["download"]]
    walked, cursor = [], None
    for _ in range(len(ids) // 2 + 2):  # the shared stack's other tests audit too: walk every line
        params = {"tenant": "acme", "limit": 2, **({"cursor": cursor} if cursor else {})}
        got = _audit(svc, **params).json()
        walked += [e["id"] for e in got["items"]]
        cursor = got["next_cursor"]
        if cursor is None:
            break
    assert walked == ids
    # who may read it: an admin key only
    assert _audit(svc, key=KEYS["acme"]).status_code == 403
    assert httpx.get(f"{svc.base_url}/v1/audit").status_code == 401
    assert _audit(svc, cursor="nope").status_code == 422
    # no secret anywhere in the stored log
    raw = b"".join(p.read_bytes() for p in (svc.data_dir / "audit").rglob("*.jsonl"))
    for s in (*KEYS.values(), ADMIN_KEY, secret, "a cat"):
        assert s.encode() not in raw


def test_admin_key_is_not_a_tenant_key(svc: Stack) -> None:
    r = httpx.get(f"{svc.base_url}/v1/erasures", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert r.status_code == 401
