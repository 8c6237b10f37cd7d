"""Webhooks against the real stack and a real HTTP receiver on loopback: Standard Webhooks signatures verify,
a receiver that fails twice gets the event exactly once more, events arrive in event order, the job's outcome
does not depend on the receiver, and a killed worker's ``erasure.failed`` is delivered by the reaper's timer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import LONG_SPEC, SHORT_SPEC, Stack, wait_for, wait_status  # noqa: E402

from app.embedded import free_port  # noqa: E402
from erasepro_jobs.webhooks import check_target  # noqa: E402

pytest_plugins = ["service_fixtures"]


class Receiver:
    """A loopback HTTP server that records every POST and answers 500 to the first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.seen: list[tuple[int, dict[str, str], bytes]] = []  # (status answered, headers, body)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    status = 500 if len(receiver.seen) < receiver.fail_first else 204
                    receiver.seen.append((status, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict]:
        with self.lock:
            return [json.loads(body) for status, _, body in self.seen if status < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(fail_first=2)
    yield rec
    rec.close()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's side of Standard Webhooks, written out (as in docs/service.md)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(sig.partition(",")[2], expected) for sig in headers["webhook-signature"].split())


def test_signed_ordered_retried_and_independent(svc: Stack, acme: httpx.Client, receiver: Receiver) -> None:
    wanted = ["erasure.created", "erasure.started", "erasure.succeeded"]
    r = acme.post("/v1/erasures", json={**SHORT_SPEC, "webhook": receiver.url, "webhook_events": wanted})
    assert r.status_code == 202, r.text
    job_id, secret = r.json()["id"], r.json()["webhook_secret"]
    assert secret.startswith("whsec_")
    view = wait_status(acme, job_id)
    assert view["status"] == "succeeded" and view["webhook"] == receiver.url  # the 500s changed nothing
    assert "webhook_secret" not in json.dumps(view)
    wait_for(lambda: len(receiver.delivered()) == 3, "three deliveries", deadline_s=120)
    got = receiver.delivered()
    assert [d["type"] for d in got] == wanted  # event order, retries included
    events = [e for e in acme.get(f"/v1/erasures/{job_id}/events").json()["items"] if e["type"] in wanted]
    assert [d["data"]["event_id"] for d in got] == [e["id"] for e in events]
    with receiver.lock:
        seen = list(receiver.seen)
    assert [s for s, _, _ in seen] == [500, 500, 204, 204, 204]  # failed twice, then each exactly once
    assert len({h["webhook-id"] for _, h, _ in seen[:3]}) == 1  # a retry keeps its id
    assert all(verify(secret, h, b) for _, h, b in seen)
    assert not verify("whsec_" + base64.b64encode(b"x" * 32).decode(), seen[0][1], seen[0][2])
    deliveries = wait_for(lambda: (lambda d: d if len(d) == 5 else None)(
        acme.get(f"/v1/erasures/{job_id}/deliveries").json()["items"]), "five recorded attempts")
    assert [d["outcome"] for d in deliveries] == ["retrying", "retrying", "delivered", "delivered", "delivered"]


def test_unreachable_receiver_never_blocks_the_job(svc: Stack, acme: httpx.Client) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    r = acme.post("/v1/erasures", json={**SHORT_SPEC, "webhook": dead})
    job_id = r.json()["id"]
    assert wait_status(acme, job_id)["status"] == "succeeded"
    first = wait_for(lambda: acme.get(f"/v1/erasures/{job_id}/deliveries").json()["items"], "an attempt")
    assert first[0]["outcome"] == "retrying" and "Connect" in first[0]["detail"]


def test_reaper_fires_erasure_failed(svc: Stack, acme: httpx.Client) -> None:
    rec = Receiver()
    try:
        r = acme.post("/v1/erasures", json={**LONG_SPEC, "webhook": rec.url, "webhook_events": ["erasure.failed"]})
        job_id = r.json()["id"]
        wait_for(lambda: svc.r.hget(f"erasepro:job:{job_id}", "status") == "running", "the job to start")
        svc.kill_worker()
        try:
            svc.start_worker()  # its heartbeat reaps, its queue delivers; nobody reads the job
            got = wait_for(rec.delivered, "erasure.failed at the receiver", deadline_s=90)
        finally:
            if not svc.worker_alive():
                svc.restart_worker()
        assert [d["type"] for d in got] == ["erasure.failed"] and got[0]["data"]["erasure_id"] == job_id
        assert "stopped responding" in got[0]["data"]["error"]
    finally:
        rec.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "http://10.1.2.3/x", "http://169.254.169.254/latest",
                                 "http://[::1]/x", "http://192.168.0.1/", "ftp://8.8.8.8/x", "http://u:p@8.8.8.8/"])
def test_private_and_odd_targets_refused(url: str) -> None:
    assert check_target(url, allow_private=False)


def test_public_and_allowed_targets_pass() -> None:
    assert check_target("https://8.8.8.8/hook", allow_private=False) is None
    assert check_target("http://127.0.0.1:9/hook", allow_private=True) is None
