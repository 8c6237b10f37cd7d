"""``erasepro.client`` against the real stack: its models match the OpenAPI components, the README journey runs
(erase → wait over SSE → download → generate → delete), a cut download resumes with Range, a real webhook
delivery verifies, and the journey block of docs/operations.md runs as written."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import KEYS, SHORT_SPEC, Stack, wait_for  # noqa: E402

from erasepro.client import SCHEMAS, ApiError, Client, WebhookVerificationError, verify_webhook  # noqa: E402
from erasepro_jobs.webhooks import new_secret, sign  # noqa: E402

pytest_plugins = ["service_fixtures"]
ROOT = Path(__file__).resolve().parents[1]
EDITS = SHORT_SPEC["edits"]


@pytest.fixture(scope="module")
def ep(svc: Stack):
    with Client(svc.base_url, api_key=KEYS["acme"]) as c:
        yield c


def test_models_match_the_openapi_schema(svc: Stack) -> None:
    components = httpx.get(f"{svc.base_url}/openapi.json", timeout=30).json()["components"]["schemas"]
    for model, name in SCHEMAS.items():
        schema = components[name]
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        assert set(fields) == set(schema["properties"]), (name, set(fields) ^ set(schema["properties"]))
        required = {n for n, f in fields.items() if f.is_required()}
        assert required == set(schema.get("required", [])), name


def test_the_journey(svc: Stack, ep: Client, tmp_path: Path) -> None:
    job = ep.erase("tiny", EDITS, metadata={"suite": "client"})
    events = [e.type for e in job.events()]
    assert events[0] == "erasure.created" and events[-1] == "erasure.succeeded", events
    view = job.wait()
    assert view.status == "succeeded" and view.metadata == {"suite": "client"}
    path = job.download(tmp_path / "d.safetensors")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == view.artifacts["delta.safetensors"].sha256
    png = job.generate("a cat", seed=1, steps=2, width=32, height=32)
    assert png.startswith(b"\x89PNG")
    base = ep.generate("a cat", base_model="tiny", seed=1, steps=2, width=32, height=32, num_images=2)
    assert len(base) == 2 and all(p.startswith(b"\x89PNG") for p in base)
    assert any(e.id == job.id for e in ep.erasures(metadata={"suite": "client"}))
    job.delete()
    with pytest.raises(ApiError) as err:
        ep.get_erasure(job.id)
    assert err.value.status == 404 and err.value.request_id


def test_download_resumes_a_cut_transfer(svc: Stack, ep: Client, tmp_path: Path) -> None:
    job = ep.erase("tiny", EDITS)
    view = job.wait()
    whole = job.download(tmp_path / "whole").read_bytes()
    etag = f'"{view.artifacts["delta.safetensors"].sha256}"'
    dest = tmp_path / "d.safetensors"
    part = tmp_path / "d.safetensors.part"
    part.write_bytes(whole[: len(whole) // 2])  # a transfer cut halfway
    (tmp_path / "d.safetensors.part.etag").write_text(etag)
    assert job.download(dest).read_bytes() == whole and not part.exists()
    # proof that only the rest was fetched: a corrupted first half is kept, so the sha256 check refuses it
    part.write_bytes(b"\0" * (len(whole) // 2))
    (tmp_path / "d.safetensors.part.etag").write_text(etag)
    dest.unlink()
    with pytest.raises(ApiError, match="sha256"):
        job.download(dest)
    assert not dest.exists()
    # a stale part of another object (If-Range does not match): the whole object comes again
    part.write_bytes(b"\0" * 10)
    (tmp_path / "d.safetensors.part.etag").write_text('"0000"')
    assert job.download(dest).read_bytes() == whole
    job.delete()


def test_a_real_delivery_verifies(svc: Stack, ep: Client) -> None:
    from test_service_webhooks import Receiver

    rec = Receiver()
    try:
        job = ep.erase("tiny", EDITS, webhook=rec.url, webhook_events=["erasure.succeeded"])
        job.wait()
        wait_for(lambda: rec.seen, "the webhook delivery")
        _, headers, body = rec.seen[0]
        assert verify_webhook(job.webhook_secret, headers, body)["type"] == "erasure.succeeded"
        with pytest.raises(WebhookVerificationError):
            verify_webhook(job.webhook_secret, headers, body + b" ")
        with pytest.raises(WebhookVerificationError):
            verify_webhook(new_secret(), headers, body)
        job.delete()
    finally:
        rec.close()


def test_verify_webhook_rotation_and_replays() -> None:
    old, new = new_secret(), new_secret()
    body = b'{"type":"erasure.succeeded"}'
    headers = {"webhook-id": "1-0", "webhook-timestamp": "1000", "webhook-signature": sign(old, "1-0", 1000, body)}
    assert verify_webhook([new, old], headers, body, now=1000)
    with pytest.raises(WebhookVerificationError, match="timestamp"):
        verify_webhook(old, headers, body, now=2000)


def test_the_docs_journey_runs_as_written(svc: Stack, tmp_path: Path) -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(# against a running service.*?)```", text, re.S)
    assert block, "the client journey block is missing from docs/operations.md"
    code = block.group(1)
    assert len(code.strip().splitlines()) < 15
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ERASEPRO_URL": svc.base_url, "ERASEPRO_API_KEY": KEYS["acme"],
           "ERASEPRO_EXAMPLE_MODEL": "tiny"}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "cat.safetensors").stat().st_size > 0 and (tmp_path / "after.png").stat().st_size > 0
