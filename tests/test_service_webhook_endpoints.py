"""Tenant webhook endpoints (``/v1/webhook-endpoints``) against the real stack and real HTTP receivers on loopback:
the secret is shown once, a tenant's erasures' events arrive signed with the endpoint's secret (verified with the
documented procedure), the filter holds, disabled and deleted endpoints stop receiving (queued deliveries are
dropped), rotation signs with the new secret (and the old one during its grace), tenants are isolated, the count
is bounded, private targets are refused at the door, and the per-job deliveries name each attempt's target.
Plus the delivery's DNS-rebinding guard: the address checked is the address connected to."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import KEYS, SHORT_SPEC, Stack, submit, wait_for, wait_status  # noqa: E402
from test_service_webhooks import Receiver, verify  # noqa: E402 - the receiver and verifier of job webhooks

from app.embedded import free_port  # noqa: E402
from app.main import create_app  # noqa: E402
from erasepro_jobs import webhooks  # noqa: E402
from erasepro_jobs.settings import Settings  # noqa: E402

pytest_plugins = ["service_fixtures"]

BASE = "/v1/webhook-endpoints"


@pytest.fixture(autouse=True)
def no_endpoints_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Endpoints are tenant-wide: one left behind would receive every later test's events (the unit tests at the
    end do not start the stack)."""
    stack = "svc" in request.fixturenames
    clients = [request.getfixturevalue("acme"), request.getfixturevalue("globex")] if stack else []
    yield
    for client in clients:
        for ep in client.get(BASE, params={"limit": 100}).json()["items"]:
            client.delete(f"{BASE}/{ep['id']}")


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for rec in made:
        rec.close()


def make_receiver(receivers: list[Receiver]) -> Receiver:
    rec = Receiver()
    receivers.append(rec)
    return rec


def create(client: httpx.Client, url: str, **fields: Any) -> dict:
    r = client.post(BASE, json={"url": url, **fields})
    assert r.status_code == 201, r.text
    return r.json()


def deliveries(client: httpx.Client, job_id: str) -> list[dict]:
    return client.get(f"/v1/erasures/{job_id}/deliveries").json()["items"]


def test_secret_shown_once_and_events_arrive_signed(svc: Stack, acme: httpx.Client, globex: httpx.Client,
                                                    receivers: list[Receiver]) -> None:
    wanted = ["erasure.created", "erasure.started", "erasure.succeeded"]
    hook, other, own, globex_hook = (make_receiver(receivers) for _ in range(4))
    ep = create(acme, hook.url, events=wanted, description="moderation pipeline")
    create(globex, globex_hook.url)  # another tenant's endpoint: none of acme's events
    assert ep["secret"].startswith("whsec_") and ep["id"].startswith("we_") and ep["enabled"] is True
    only_failed = create(acme, other.url, events=["erasure.failed"])
    for body in (acme.get(f"{BASE}/{ep['id']}").text, acme.get(BASE).text):
        assert "whsec_" not in body and "secret\"" not in body
    listed = acme.get(BASE).json()["items"]
    assert {e["id"] for e in listed} == {ep["id"], only_failed["id"]}
    assert acme.get(f"{BASE}/{ep['id']}").json()["events"] == wanted

    r = acme.post("/v1/erasures", json={**SHORT_SPEC, "webhook": own.url, "webhook_events": ["erasure.succeeded"]})
    job_id, job_secret = r.json()["id"], r.json()["webhook_secret"]
    assert wait_status(acme, job_id)["status"] == "succeeded"
    wait_for(lambda: len(hook.delivered()) == 3 and own.delivered(), "the endpoint's and the job's deliveries")
    got = hook.delivered()
    assert [d["type"] for d in got] == wanted and all(d["data"]["erasure_id"] == job_id for d in got)
    events = [e["id"] for e in acme.get(f"/v1/erasures/{job_id}/events").json()["items"] if e["type"] in wanted]
    assert [d["data"]["event_id"] for d in got] == events  # in event order
    with hook.lock:
        seen = list(hook.seen)
    assert all(verify(ep["secret"], h, b) for _, h, b in seen)
    assert not any(verify(job_secret, h, b) for _, h, b in seen)  # each target signs with its own secret
    assert all(verify(job_secret, h, b) for _, h, b in own.seen)
    assert other.seen == [] and globex_hook.seen == []  # its filter takes only erasure.failed; not globex's job
    log = wait_for(lambda: (lambda d: d if len(d) == 4 else None)(deliveries(acme, job_id)), "four attempts")
    assert sorted((d["target"], d["type"], d["outcome"]) for d in log) == sorted(
        [(ep["id"], t, "delivered") for t in wanted] + [("webhook", "erasure.succeeded", "delivered")])


def test_rotation_signs_with_the_new_secret(svc: Stack, acme: httpx.Client, receivers: list[Receiver]) -> None:
    hook = make_receiver(receivers)
    ep = create(acme, hook.url, events=["erasure.succeeded"])
    rotated = acme.post(f"{BASE}/{ep['id']}/rotate-secret").json()  # default: the old secret keeps a day's grace
    assert rotated["secret"] != ep["secret"] and rotated["previous_secret_expires_at"]
    assert "whsec_" not in acme.get(f"{BASE}/{ep['id']}").text
    wait_status(acme, submit(acme, SHORT_SPEC))
    wait_for(lambda: len(hook.delivered()) == 1, "the delivery during the grace period")
    _, headers, body = hook.seen[0]
    assert len(headers["webhook-signature"].split()) == 2
    assert verify(rotated["secret"], headers, body) and verify(ep["secret"], headers, body)

    final = acme.post(f"{BASE}/{ep['id']}/rotate-secret", json={"grace_s": 0}).json()
    assert final["previous_secret_expires_at"] is None
    wait_status(acme, submit(acme, SHORT_SPEC))
    wait_for(lambda: len(hook.delivered()) == 2, "the delivery after the second rotation")
    _, headers, body = hook.seen[1]
    assert verify(final["secret"], headers, body)
    assert not verify(rotated["secret"], headers, body) and not verify(ep["secret"], headers, body)
    assert acme.post(f"{BASE}/{ep['id']}/rotate-secret", json={"grace_s": -1}).status_code == 422


def test_disabled_and_deleted_endpoints_receive_nothing(svc: Stack, acme: httpx.Client,
                                                        receivers: list[Receiver]) -> None:
    disabled_rx, deleted_rx, marker_rx = (make_receiver(receivers) for _ in range(3))
    disabled = create(acme, disabled_rx.url)
    deleted = create(acme, deleted_rx.url)
    marker = create(acme, marker_rx.url, events=["erasure.succeeded"])
    r = acme.patch(f"{BASE}/{disabled['id']}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert acme.delete(f"{BASE}/{deleted['id']}").status_code == 204
    assert acme.get(f"{BASE}/{deleted['id']}").status_code == 404
    assert acme.delete(f"{BASE}/{deleted['id']}").status_code == 404
    job_id = submit(acme, SHORT_SPEC)
    assert wait_status(acme, job_id)["status"] == "succeeded"
    wait_for(marker_rx.delivered, "the enabled endpoint's delivery")
    assert svc.r.smembers(f"erasepro:wh:{job_id}:targets") == {marker["id"]}  # nothing queued for the others
    assert disabled_rx.seen == [] and deleted_rx.seen == []
    assert {d["target"] for d in deliveries(acme, job_id)} == {marker["id"]}


@pytest.mark.parametrize("how", ["disable", "delete"])
def test_queued_deliveries_are_dropped(svc: Stack, acme: httpx.Client, how: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nobody"  # refused: the delivery keeps retrying
    ep = create(acme, dead, events=["erasure.created"])
    job_id = submit(acme, SHORT_SPEC)
    wait_for(lambda: any(d["target"] == ep["id"] and d["outcome"] == "retrying" for d in deliveries(acme, job_id)),
             "a failed attempt to the endpoint")
    if how == "disable":
        assert acme.patch(f"{BASE}/{ep['id']}", json={"enabled": False}).status_code == 200
    else:
        assert acme.delete(f"{BASE}/{ep['id']}").status_code == 204
    dropped = wait_for(lambda: [d for d in deliveries(acme, job_id) if d["outcome"] == "dropped"],
                       "the queued delivery to be dropped", deadline_s=60)
    assert dropped[0]["target"] == ep["id"] and dropped[0]["type"] == "erasure.created"
    assert ("disabled" if how == "disable" else "deleted") in dropped[0]["detail"]
    assert not svc.r.exists(f"erasepro:wh:{job_id}:{ep['id']}:pending")
    assert wait_status(acme, job_id)["status"] == "succeeded"  # the receiver never mattered


def test_a_name_that_stopped_resolving_is_retried(svc: Stack, acme: httpx.Client,
                                                  receivers: list[Receiver]) -> None:
    """The endpoint's name stops resolving after it passed the door (written straight into its record, as a DNS
    change would): the worker records failed attempts and retries them, it does not drop the event."""
    ep = create(acme, make_receiver(receivers).url, events=["erasure.created"])
    svc.r.hset(f"erasepro:whep:{ep['id']}", "url", "http://no-such-host.invalid/hook")
    job_id = submit(acme, SHORT_SPEC)
    tries = wait_for(lambda: (lambda d: d if len(d) >= 2 else None)(deliveries(acme, job_id)), "two attempts")
    assert [(d["target"], d["outcome"], d["attempt"]) for d in tries[:2]] == [
        (ep["id"], "retrying", 1), (ep["id"], "retrying", 2)]
    assert "does not resolve" in tries[0]["detail"]
    wait_status(acme, job_id)


def test_another_tenants_endpoint_is_404(svc: Stack, acme: httpx.Client, globex: httpx.Client,
                                         receivers: list[Receiver]) -> None:
    ep = create(acme, make_receiver(receivers).url)
    path = f"{BASE}/{ep['id']}"
    assert globex.get(path).status_code == 404
    assert globex.patch(path, json={"enabled": False}).status_code == 404
    assert globex.post(f"{path}/rotate-secret").status_code == 404
    assert globex.delete(path).status_code == 404
    assert ep["id"] not in globex.get(BASE).text
    after = acme.get(path).json()
    assert after["enabled"] is True and after["updated_at"] == ep["updated_at"]  # untouched
    for bad in ("nope", "we_" + "0" * 32, "x" * 64):
        assert acme.get(f"{BASE}/{bad}").status_code == 404
    assert acme.get(f"{BASE}/{'x' * 65}").status_code == 422


def test_count_limit_and_pagination(svc: Stack, globex: httpx.Client, receivers: list[Receiver]) -> None:
    url = make_receiver(receivers).url
    limit = Settings().webhook_max_endpoints  # the stack runs with the default
    made = [create(globex, url, description=f"n{i}") for i in range(limit)]
    r = globex.post(BASE, json={"url": url})
    assert r.status_code == 409 and str(limit) in r.json()["detail"]
    seen, cursor = [], None
    while True:
        page = globex.get(BASE, params={"limit": 5, **({"cursor": cursor} if cursor else {})}).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [e["id"] for e in reversed(made)]  # newest first, each once
    assert globex.get(BASE, params={"cursor": "bm90LWEtY3Vyc29y"}).status_code == 422
    assert globex.delete(f"{BASE}/{made[0]['id']}").status_code == 204
    create(globex, url)  # room again


@pytest.mark.parametrize("body", [
    {"url": "ftp://127.0.0.1/x"}, {"url": "http://127.0.0.1/x", "events": ["erasure.nope"]},
    {"url": "http://127.0.0.1/x", "events": []}, {"url": "http://127.0.0.1/x", "description": "d" * 501},
    {"url": "http://127.0.0.1/x", "secret": "whsec_mine"}, {"url": "http://127.0.0.1/x", "enabled": "maybe"},
    {"events": ["erasure.failed"]}])
def test_bad_bodies_are_422(svc: Stack, acme: httpx.Client, body: dict) -> None:
    assert acme.post(BASE, json=body).status_code == 422
    assert acme.get(BASE).json()["items"] == []


def test_patch_changes_only_what_is_sent(svc: Stack, acme: httpx.Client, receivers: list[Receiver]) -> None:
    ep = create(acme, make_receiver(receivers).url, events=["erasure.failed"], description="a")
    path = f"{BASE}/{ep['id']}"
    for bad in ({"url": None}, {"enabled": None}, {"url": "gopher://x"}, {"events": ["nope"]}, {"id": "we_x"}):
        assert acme.patch(path, json=bad).status_code == 422, bad
    r = acme.patch(path, json={"events": None})
    assert r.status_code == 200 and r.json()["events"] is None and r.json()["description"] == "a"
    other = make_receiver(receivers).url
    r = acme.patch(path, json={"url": other, "description": "b"})
    assert r.json()["url"] == other and r.json()["description"] == "b" and r.json()["events"] is None


def test_private_urls_refused_unless_allowed(svc: Stack) -> None:
    """An API built with ``webhook_allow_private`` off (on the stack's Redis): the door refuses loopback and
    private targets for endpoints as it does for a job's webhook."""
    settings = Settings(redis_url=svc.redis_server.url, data_dir=svc.data_dir, api_keys_env=f"acme:{KEYS['acme']}",
                        webhook_allow_private=False, include_bundled=False)
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {KEYS['acme']}"}) as c:
        for url in ("http://127.0.0.1:9/x", "http://10.0.0.1/x", "http://169.254.169.254/latest", "http://[::1]/"):
            r = c.post(BASE, json={"url": url})
            assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "url"], r.text
        ep = c.post(BASE, json={"url": "https://8.8.8.8/hook", "enabled": False}).json()  # public: accepted
        r = c.patch(f"{BASE}/{ep['id']}", json={"url": "http://192.168.1.1/"})
        assert r.status_code == 422 and c.get(f"{BASE}/{ep['id']}").json()["url"] == "https://8.8.8.8/hook"
        assert c.delete(f"{BASE}/{ep['id']}").status_code == 204


# ------------------------------------------------------------------------------------- DNS rebinding guard
@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``rebind.test`` answers each lookup with the next address of the returned list (the system resolver for
    every other name): a name that is one address when checked and another when connected to."""
    answers: list[str] = []
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            return real(answers.pop(0), port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return answers


def test_delivery_connects_to_the_checked_address(rebinding: list[str]) -> None:
    rec = Receiver()
    try:
        port = rec.server.server_address[1]
        # checked: loopback (allowed here); any later lookup would give an unroutable address
        rebinding += ["127.0.0.1", "10.255.255.1", "10.255.255.1"]
        target = webhooks.resolve_target(f"http://rebind.test:{port}/hook?x=1", allow_private=True)
        assert isinstance(target, webhooks.Target) and target.ip == "127.0.0.1"
        resp = webhooks.post_pinned(target, b"{}", {"content-type": "application/json"}, timeout_s=5)
        assert resp.status_code == 204 and len(rebinding) == 2  # one lookup, the check's
        _, headers, _ = rec.seen[0]
        assert headers["host"] == f"rebind.test:{port}"  # the name stays the name the receiver expects
    finally:
        rec.close()


def test_delivery_refuses_a_name_that_turned_private(rebinding: list[str]) -> None:
    rebinding += ["8.8.8.8", "127.0.0.1"]
    assert webhooks.check_target("http://rebind.test/hook", allow_private=False) is None  # public at the door
    problem = webhooks.resolve_target("http://rebind.test/hook", allow_private=False)  # private at delivery
    assert isinstance(problem, str) and "127.0.0.1" in problem


def test_tls_keeps_the_hostname_for_sni_and_certificates(tmp_path: Path) -> None:
    """An https target pinned to 127.0.0.1 still sends the URL's name as SNI and checks the certificate against it:
    a certificate for ``rebind.test`` (and only that name) verifies."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=rebind.test", "-addext", "subjectAltName=DNS:rebind.test", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    rec = Receiver()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: names.append(name)
    rec.server.socket = server_ctx.wrap_socket(rec.server.socket, server_side=True)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    try:
        port = rec.server.server_address[1]
        target = webhooks.Target(f"https://rebind.test:{port}/hook", "127.0.0.1")
        resp = webhooks.post_pinned(target, b"{}", {}, timeout_s=5, verify=client_ctx)
        assert resp.status_code == 204 and names == ["rebind.test"]
        assert rec.seen[0][1]["host"] == f"rebind.test:{port}"
        with pytest.raises(httpx.ConnectError, match="certificate"):  # a name the certificate does not hold
            webhooks.post_pinned(webhooks.Target(f"https://other.test:{port}/hook", "127.0.0.1"), b"{}", {},
                                 timeout_s=5, verify=client_ctx)
    finally:
        rec.close()


def test_redirects_are_not_followed() -> None:
    """A receiver answering 307 elsewhere is a failed attempt (``HTTP 307``), and the elsewhere gets nothing."""
    elsewhere = Receiver()

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(307)
            self.send_header("location", elsewhere.url)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        target = webhooks.resolve_target(f"http://127.0.0.1:{server.server_address[1]}/hook", allow_private=True)
        assert isinstance(target, webhooks.Target)
        resp = webhooks.post_pinned(target, b"{}", {"content-type": "application/json"}, timeout_s=5)
        assert resp.status_code == 307 and elsewhere.seen == []
    finally:
        server.shutdown()
        server.server_close()
        elsewhere.close()


def test_an_unresolvable_host_is_retried_not_dropped() -> None:
    """A name that does not resolve is refused at the door, and at delivery it is a failed attempt (retried with
    backoff: DNS may be down for a moment), not a refusal for good."""
    found = webhooks.resolve_target("https://no-such-host.invalid/hook", allow_private=False)
    assert isinstance(found, webhooks.Unresolved)
    assert webhooks.check_target("https://no-such-host.invalid/hook", allow_private=True)  # the door: 422
    refused = webhooks.resolve_target("http://127.0.0.1/hook", allow_private=False)
    assert isinstance(refused, str) and not isinstance(refused, webhooks.Unresolved)
