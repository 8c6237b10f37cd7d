"""Issue 9 against the running stack: the locked embedded Redis, the worker's job allowlist, per-model bounds,
the per-tenant limit, cancellable generations, errors at the door (auth first, JSON preconditions and Range),
idempotency removed with its job and durable across a flush, failed generations without 5xx, slow clients."""

from __future__ import annotations

import os
import socket
import stat
import time

import httpx
import pytest
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import (  # noqa: E402
    FUZZ_LIMIT,
    FUZZ_LIMITED_TENANT,
    KEYS,
    LONG_SPEC,
    SHORT_SPEC,
    SLOW_CLIENT_TIMEOUT_S,
    Stack,
    submit,
    wait_for,
    wait_status,
)

from app.bounds import check_generation  # noqa: E402
from app.schemas import GenerateRequest  # noqa: E402
from erasepro_jobs.registry import Registry  # noqa: E402

pytest_plugins = ["service_fixtures"]  # the running service (shared by every test_service_* module)


# ------------------------------------------------------------------------------------------ embedded Redis
def _raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        return s.recv(200)


def test_embedded_redis_needs_its_password(svc: Stack) -> None:
    server = svc.redis_server
    assert server is not None
    assert _raw(server.port, b"PING\r\n").startswith(b"-NOAUTH")
    assert _raw(server.port, b"AUTH wrong-password\r\n").startswith(b"-WRONGPASS")
    assert _raw(server.port, f"AUTH {server.password}\r\nPING\r\n".encode()) == b"+OK\r\n+PONG\r\n"
    assert stat.S_IMODE(os.stat(server.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(server.directory / "password").st_mode) == 0o600
    with open(f"/proc/{server.proc.pid}/cmdline", "rb") as f:
        assert server.password.encode() not in f.read()  # never on a command line


def test_worker_runs_only_the_projects_jobs(svc: Stack) -> None:
    """The probe's attack: any Redis client could queue ``platform.node`` on ``erase`` and the worker ran it."""
    import redis

    conn = redis.Redis.from_url(svc.redis_server.url)
    try:
        job = Queue("erase", connection=conn, serializer=JSONSerializer).enqueue_call("platform.node")
        done = wait_for(lambda: Job.fetch(job.id, connection=conn, serializer=JSONSerializer).get_status()
                        in ("failed", "finished"), "the worker to take the job")
        assert done
        fetched = Job.fetch(job.id, connection=conn, serializer=JSONSerializer)
        assert fetched.get_status() == "failed"
        assert fetched.return_value() is None
        assert "refused to run 'platform.node'" in (fetched.latest_result().exc_string or "")
    finally:
        conn.close()
    assert svc.worker.poll() is None  # and it carries on
    assert httpx.get(f"{svc.base_url}/readyz").status_code == 200


# ------------------------------------------------------------------------------------------------ bounds
@pytest.mark.parametrize("layers, by_registry", [([999], False), ([0, 2**70], False), ([4], True), ([-5], True)])
def test_layers_out_of_the_models_range_are_422(acme: httpx.Client, layers: list[int], by_registry: bool) -> None:
    """Absurd indexes are refused by the spec itself; the rest against the model's depth, read from the tiny
    model's text_encoder/config.json (4 layers: valid -4..3)."""
    r = acme.post("/v1/erasures", json={**SHORT_SPEC, "options": {"layers": layers, "schedule": "front"}})
    assert r.status_code == 422, r.text
    locs = [".".join(map(str, e["loc"])) for e in r.json()["errors"]]
    assert locs and all(loc.startswith("body.options.layers") for loc in locs), locs
    if by_registry:
        assert "4 layers" in r.text and locs == [f"body.options.layers.{len(layers) - 1}"]


def test_erasure_cost_over_the_limit_is_422(acme: httpx.Client) -> None:
    body = {**SHORT_SPEC, "edits": [{"target": f"thing {i}"} for i in range(300)],
            "preserve": [f"keep {i}" for i in range(1000)],
            "options": {"templates": [f"{{}} style {i}" for i in range(64)]}}
    r = acme.post("/v1/erasures", json=body)
    assert r.status_code == 422, r.text
    assert "exceeds this server's limit" in r.text and "300 edits × 64 templates × 1420 preserve prompts" in r.text
    body["edits"] = body["edits"][:200]  # 200 × 64 × 1420 = 18.2 M: under the default 20 M
    ok = acme.post("/v1/erasures", json=body)
    assert ok.status_code == 202, ok.text
    assert acme.post(f"/v1/erasures/{ok.json()['id']}/cancel").status_code == 202


@pytest.mark.parametrize("body, loc", [
    ({"prompt": "x", "width": 2048, "height": 2048}, "body.width"),
    ({"prompt": "x", "width": 256}, "body.width"),
    ({"prompt": "x", "width": 128, "height": 128, "num_images": 4}, "body.num_images"),
])
def test_generation_over_the_models_bounds_is_422(acme: httpx.Client, finished: dict, body: dict, loc: str) -> None:
    for url in ("/v1/base-models/tiny/generate", f"/v1/erasures/{finished['id']}/generate"):
        r = acme.post(url, json=body)
        assert r.status_code == 422, r.text
        assert loc in [".".join(map(str, e["loc"])) for e in r.json()["errors"]]


def test_bundled_model_bounds_come_from_its_configs() -> None:
    info = Registry(None).require("bundled")
    assert info.limits.resolution == 16 and info.limits.max_side == 64 and info.text_layers == 3
    from fastapi.exceptions import RequestValidationError

    with pytest.raises(RequestValidationError) as exc:
        check_generation(GenerateRequest(prompt="x", width=2048, height=2048, num_images=1), info)
    assert {e["loc"][-1] for e in exc.value.errors()} == {"width", "height", "num_images"}
    check_generation(GenerateRequest(prompt="x", width=16, height=16), info)  # native size passes


# --------------------------------------------------------------------------------- tenant limit (429)
def test_tenant_limit_on_queued_and_running_jobs(svc: Stack) -> None:
    url = svc.start_fuzz_api()  # no worker reads its queue: jobs stay queued
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEYS[FUZZ_LIMITED_TENANT]}"}) as c:
        active = [j["id"] for j in c.get("/v1/erasures", params={"limit": 100}).json()["items"]
                  if j["status"] in ("queued", "running")]
        ids = [submit(c, {**SHORT_SPEC, "edits": [{"target": f"limit {i}"}]}) for i in range(FUZZ_LIMIT - len(active))]
        r = c.post("/v1/erasures", json={**SHORT_SPEC, "edits": [{"target": "one too many"}]})
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) > 0 and r.json()["limit"] == FUZZ_LIMIT
        gen = c.post("/v1/base-models/tiny/generate", json={"prompt": "x"}, params={"wait": 0})
        assert gen.status_code == 429  # generations count too
        assert c.post(f"/v1/erasures/{(ids or active)[0]}/cancel").json()["status"] == "cancelled"
        assert c.post("/v1/erasures", json={**SHORT_SPEC, "edits": [{"target": "now it fits"}]}).status_code == 202


def test_queued_generation_can_be_cancelled(svc: Stack) -> None:
    url = svc.start_fuzz_api()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEYS['acme']}"}) as c:
        r = c.post("/v1/base-models/tiny/generate", json={"prompt": "x"}, params={"wait": 0})
        assert r.status_code == 202, r.text
        gid = r.json()["id"]
        early = c.delete(f"/v1/generations/{gid}")  # DELETE removes a finished generation; a queued one is 409
        assert early.status_code == 409 and f"/v1/generations/{gid}/cancel" in early.json()["detail"], early.text
        gone = c.post(f"/v1/generations/{gid}/cancel")
        assert gone.status_code == 202 and gone.json()["status"] == "cancelled"
        assert c.post(f"/v1/generations/{gid}/cancel").status_code == 409
        img = c.get(f"/v1/generations/{gid}/images")
        assert img.status_code == 409 and img.headers["content-type"] == "application/problem+json"
        assert "generation cancelled" in img.json()["detail"]
        assert c.delete(f"/v1/generations/{gid}").status_code == 204
        assert c.get(f"/v1/generations/{gid}").status_code == 404


# ------------------------------------------------------------------------------------------------ door
def test_auth_is_checked_before_the_body(svc: Stack) -> None:
    for headers in ({"Content-Type": "application/json"}, {"Content-Type": "text/plain"}, {}):
        r = httpx.post(f"{svc.base_url}/v1/erasures", content=b"{not json", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
        assert r.headers["content-type"] == "application/problem+json"


def test_preconditions_and_ranges_follow_rfc_9110(acme: httpx.Client, finished: dict) -> None:
    url = f"/v1/erasures/{finished['id']}/checkpoint"
    full = acme.get(url)
    etag, size = full.headers["etag"], len(full.content)
    for inm in ("*", etag, f"W/{etag}", f'"other", W/{etag}'):
        r = acme.get(url, headers={"If-None-Match": inm})
        assert r.status_code == 304 and r.headers["etag"] == etag, inm
    assert acme.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    for im in ('"other"', f"W/{etag}"):  # If-Match uses the strong comparison: a weak tag never matches
        r = acme.get(url, headers={"If-Match": im})
        assert r.status_code == 412 and r.json()["detail"].startswith("If-Match"), im
    assert acme.get(url, headers={"If-Match": etag}).content == full.content
    assert acme.get(url, headers={"If-Match": "*"}).status_code == 200
    r = acme.get(url, headers={"Range": f"bytes={size + 10}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}" and "outside" in r.json()["detail"]
    r = acme.get(url, headers={"Range": "bytes=abc"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    r = acme.get(url, headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == full.content[:10]


# ----------------------------------------------------------------------------------------- idempotency
def test_replay_after_delete_starts_a_new_job(acme: httpx.Client) -> None:
    body = {**SHORT_SPEC, "edits": [{"target": "a lamp", "anchor": "a candle"}]}
    first = submit(acme, body, **{"Idempotency-Key": "delete-then-replay"})
    assert wait_status(acme, first)["status"] == "succeeded"
    assert acme.delete(f"/v1/erasures/{first}").status_code == 204
    again = acme.post("/v1/erasures", json=body, headers={"Idempotency-Key": "delete-then-replay"})
    assert again.status_code == 202 and again.json()["id"] != first
    assert "idempotent-replayed" not in again.headers
    assert wait_status(acme, again.json()["id"])["status"] == "succeeded"


def test_replay_after_a_redis_flush_is_no_duplicate(svc: Stack, acme: httpx.Client) -> None:
    body = {**SHORT_SPEC, "edits": [{"target": "a kite", "anchor": "a bird"}]}
    first = submit(acme, body, **{"Idempotency-Key": "flush-then-replay"})
    assert wait_status(acme, first)["status"] == "succeeded"
    svc.r.flushall()
    again = acme.post("/v1/erasures", json=body, headers={"Idempotency-Key": "flush-then-replay"})
    assert again.status_code == 202 and again.json()["id"] == first, again.text
    assert again.headers["idempotent-replayed"] == "true"
    other = acme.post("/v1/erasures", json={**body, "method": "uce"}, headers={"Idempotency-Key": "flush-then-replay"})
    assert other.status_code == 409
    wait_for(lambda: httpx.get(f"{svc.base_url}/readyz").status_code == 200, "the worker to heartbeat again")


# ---------------------------------------------------------------------------------- failed generations
def test_generation_of_a_deleted_erasure_is_404_not_500(svc: Stack, acme: httpx.Client) -> None:
    doomed = submit(acme, {**SHORT_SPEC, "edits": [{"target": "a vase", "anchor": "a jug"}]})
    assert wait_status(acme, doomed)["status"] == "succeeded"
    blocker = submit(acme, LONG_SPEC)  # keeps the only worker busy while the generation waits in the queue
    wait_for(lambda: acme.get(f"/v1/erasures/{blocker}").json()["status"] == "running", "the blocker to run")
    r = acme.post(f"/v1/erasures/{doomed}/generate", json={"prompt": "a vase", "steps": 2, "width": 32,
                                                           "height": 32}, params={"wait": 0})
    assert r.status_code == 202, r.text
    gid = r.json()["id"]
    assert acme.delete(f"/v1/erasures/{doomed}").status_code == 204
    assert acme.post(f"/v1/erasures/{blocker}/cancel").status_code == 202
    view = wait_for(lambda: (lambda v: v if v["status"] in ("failed", "succeeded") else None)(
        acme.get(f"/v1/generations/{gid}").json()), "the orphaned generation to end")
    assert view["status"] == "failed" and "deleted" in view["error"], view
    img = acme.get(f"/v1/generations/{gid}/images")
    assert img.status_code == 404 and "has been deleted" in img.json()["detail"], img.text


# ----------------------------------------------------------------------------------------- slow clients
def test_slow_header_client_is_dropped(svc: Stack) -> None:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", svc.port), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for _ in range(40):  # one header byte every 0.25 s: never a complete head
            try:
                s.sendall(b"X")
                s.settimeout(0.25)
                if s.recv(100) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        assert closed, "the server kept a never-ending request head open"
    assert time.monotonic() - start < SLOW_CLIENT_TIMEOUT_S + 5
    assert httpx.get(f"{svc.base_url}/healthz").status_code == 200


def test_slow_body_client_gets_408(svc: Stack) -> None:
    head = (f"POST /v1/erasures HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS['acme']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"base").encode()
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", svc.port), timeout=SLOW_CLIENT_TIMEOUT_S + 10) as s:
        s.sendall(head)
        reply = b""
        while chunk := s.recv(1000):  # the server closes the connection after its answer
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b"application/problem+json" in reply and b"did not arrive within" in reply
    assert time.monotonic() - start < SLOW_CLIENT_TIMEOUT_S + 5
