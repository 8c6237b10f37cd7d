"""End to end over HTTP: POST -> poll -> download (sha256, Range, ETag; apply_delta accepts it) -> generate."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile

import httpx
import pytest
import torch
from PIL import Image

from erasepro_core.adapters import resolve_parameter
from erasepro_core.delta import Delta, DeltaMismatchError, applied_delta, apply_delta
from erasepro_core.pipeline import load_pipeline

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import GEN, LONG_SPEC, SHORT_SPEC, Stack, submit, wait_for, wait_status  # noqa: E402

pytest_plugins = ["service_fixtures"]  # the running service (shared by every test_service_* module)


@pytest.fixture(scope="module")
def delta_bytes(acme: httpx.Client, finished: dict) -> bytes:
    r = acme.get(f"/v1/erasures/{finished['id']}/checkpoint", params={"format": "delta"})
    assert r.status_code == 200
    return r.content


def test_checkpoint_download_headers_and_integrity(svc: Stack, acme: httpx.Client, finished: dict,
                                                   delta_bytes: bytes) -> None:
    jid = finished["id"]
    r = acme.get(f"/v1/erasures/{jid}/checkpoint")
    digest = hashlib.sha256(r.content).hexdigest()
    assert r.headers["etag"] == f'"{digest}"'
    assert int(r.headers["content-length"]) == len(r.content) == finished["artifacts"]["delta.safetensors"]["size"]
    assert finished["artifacts"]["delta.safetensors"]["sha256"] == digest
    assert r.headers["accept-ranges"] == "bytes"
    assert r.content == delta_bytes
    part = acme.get(f"/v1/erasures/{jid}/checkpoint", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.content == delta_bytes[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(delta_bytes)}"
    tail = acme.get(f"/v1/erasures/{jid}/checkpoint", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == delta_bytes[-10:]
    bad = acme.get(f"/v1/erasures/{jid}/checkpoint", headers={"Range": f"bytes={len(delta_bytes) + 5}-"})
    assert bad.status_code == 416
    assert acme.get(f"/v1/erasures/{jid}/checkpoint", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    head = acme.head(f"/v1/erasures/{jid}/checkpoint")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(delta_bytes)
    # the manifest on disk is the durable record: spec, report, fingerprint, hashes, timestamps, tenant
    import json

    manifest = json.loads((svc.data_dir / "tenants" / "acme" / "erasures" / jid / "manifest.json").read_text())
    assert manifest["tenant"] == "acme" and manifest["id"] == jid
    assert manifest["files"]["delta.safetensors"]["sha256"] == digest
    assert manifest["base_model"]["name"] == "tiny" and len(manifest["base_model"]["fingerprint"]) == 64
    assert manifest["spec"]["edits"] == [{"target": "a cat", "anchor": "a dog"}]
    assert "summary" in manifest["report"]
    assert manifest["created_at"] <= manifest["started_at"] <= manifest["finished_at"]


def test_downloaded_delta_applies_to_its_base_only(svc: Stack, delta_bytes: bytes, finished: dict, tmp_path) -> None:
    path = tmp_path / "d.safetensors"
    path.write_bytes(delta_bytes)
    delta = Delta.load(path)
    assert delta.fingerprint == finished["base_fingerprint"]
    pipe = load_pipeline(svc.models_dir / "tiny", device="cpu")
    key = next(iter(delta.tensors))
    before = resolve_parameter(pipe, key).detach().clone()
    with applied_delta(pipe, delta):
        assert torch.equal(resolve_parameter(pipe, key), delta.tensors[key].to(before.dtype))
    assert torch.equal(resolve_parameter(pipe, key), before)
    other = load_pipeline(svc.models_dir / "tiny-b", device="cpu")
    with pytest.raises(DeltaMismatchError):
        apply_delta(other, path)


def _png(content: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(content))
    img.load()
    return img


def test_generation_is_deterministic_and_edited_differs(acme: httpx.Client, finished: dict) -> None:
    jid = finished["id"]
    body = {"prompt": "a photo of a cat", "seed": 7, **GEN}
    base1 = acme.post("/v1/base-models/tiny/generate", json=body)
    assert base1.status_code == 200, base1.text
    assert base1.headers["content-type"] == "image/png"
    assert _png(base1.content).size == (32, 32)
    edited1 = acme.post(f"/v1/erasures/{jid}/generate", json=body)
    edited2 = acme.post(f"/v1/erasures/{jid}/generate", json=body)
    base2 = acme.post("/v1/base-models/tiny/generate", json=body)
    assert edited1.status_code == edited2.status_code == base2.status_code == 200
    assert edited1.content == edited2.content  # same seed, same bytes
    assert base1.content == base2.content  # ... and the cached base was not left edited
    assert edited1.content != base1.content  # the erasure changes a target prompt's image
    other_seed = acme.post("/v1/base-models/tiny/generate", json={**body, "seed": 8})
    assert other_seed.content != base1.content


def test_generation_json_and_polling(acme: httpx.Client, finished: dict) -> None:
    jid = finished["id"]
    many = acme.post(f"/v1/erasures/{jid}/generate", json={"prompt": "a dog", "num_images": 2, **GEN})
    assert many.status_code == 200 and many.headers["content-type"].startswith("application/json")
    payload = many.json()
    assert len(payload["images"]) == 2 and payload["seed"] == 0
    for b64 in payload["images"]:
        assert _png(base64.b64decode(b64)).size == (32, 32)
    one_json = acme.post(f"/v1/erasures/{jid}/generate", json={"prompt": "a dog", **GEN},
                         headers={"Accept": "application/json"})
    assert one_json.status_code == 200 and len(one_json.json()["images"]) == 1
    later = acme.post(f"/v1/erasures/{jid}/generate", json={"prompt": "a dog", **GEN}, params={"wait": 0})
    assert later.status_code == 202
    gid = later.json()["id"]
    assert later.headers["location"] == f"/v1/generations/{gid}"
    done = wait_for(lambda: acme.get(f"/v1/generations/{gid}").json()["status"] == "succeeded"
                    or acme.get(f"/v1/generations/{gid}").json()["status"] == "failed", "the generation")
    assert done
    view = acme.get(f"/v1/generations/{gid}").json()
    assert view["status"] == "succeeded" and view["erasure_id"] == jid and view["timings"]["generate_s"] >= 0
    img = acme.get(f"/v1/generations/{gid}/images")
    assert img.status_code == 200 and img.content == base64.b64decode(one_json.json()["images"][0])


def test_generation_needs_a_succeeded_erasure(acme: httpx.Client) -> None:
    # out-of-range layers are refused at the door now (test_service_hardening); a job that fails in the worker:
    job_id = submit(acme, {**LONG_SPEC, "timeout_s": 1})
    view = wait_status(acme, job_id)
    assert view["status"] == "failed"
    assert "timed out" in view["error"].lower()
    assert acme.post(f"/v1/erasures/{job_id}/generate", json={"prompt": "x"}).status_code == 409
    assert acme.get(f"/v1/erasures/{job_id}/checkpoint").status_code == 409
    assert acme.delete(f"/v1/erasures/{job_id}").status_code == 204


def test_diffusers_export_on_demand(svc: Stack, acme: httpx.Client, finished: dict, delta_bytes: bytes,
                                   tmp_path) -> None:
    jid = finished["id"]
    url = f"/v1/erasures/{jid}/checkpoint"
    first = acme.get(url, params={"format": "diffusers"})
    assert first.status_code in (200, 202)
    if first.status_code == 202:
        assert first.json()["export_job"] and first.headers["retry-after"]
    r = wait_for(lambda: (lambda x: x if x.status_code == 200 else None)(
        acme.get(url, params={"format": "diffusers"}, follow_redirects=True)), "the export", every=0.25)
    assert r.headers["content-type"] == "application/x-tar"
    assert r.headers["etag"] == f'"{hashlib.sha256(r.content).hexdigest()}"'
    assert int(r.headers["content-length"]) == len(r.content)
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        names = tar.getnames()
        assert f"erasepro-{jid}/model_index.json" in names
        tar.extractall(tmp_path, filter="data")
    exported = load_pipeline(tmp_path / f"erasepro-{jid}", device="cpu")
    path = tmp_path / "d.safetensors"
    path.write_bytes(delta_bytes)
    delta = Delta.load(path)
    for key, tensor in delta.tensors.items():
        assert torch.equal(resolve_parameter(exported, key), tensor.to(torch.float32)), key
    view = acme.get(f"/v1/erasures/{jid}").json()
    assert view["artifacts"]["pipeline.tar"]["sha256"] == hashlib.sha256(r.content).hexdigest()


def test_listing_is_newest_first_and_paginated(acme: httpx.Client) -> None:
    ids = [submit(acme, {**SHORT_SPEC, "edits": [{"target": f"list item {i}"}]}) for i in range(3)]
    seen, cursor = [], None
    while True:
        page = acme.get("/v1/erasures", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        assert len(page["items"]) <= 2
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen[:3] == ids[::-1]
    assert len(seen) == len(set(seen))
    created = [acme.get(f"/v1/erasures/{j}").json()["created_at"] for j in seen]
    assert created == sorted(created, reverse=True)
    for j in ids:
        wait_status(acme, j)


def test_delete_finished_removes_checkpoint(svc: Stack, acme: httpx.Client) -> None:
    job_id = submit(acme, {**SHORT_SPEC, "edits": [{"target": "a bicycle"}]})
    assert wait_status(acme, job_id)["status"] == "succeeded"
    directory = svc.data_dir / "tenants" / "acme" / "erasures" / job_id
    assert (directory / "manifest.json").is_file()
    assert acme.delete(f"/v1/erasures/{job_id}").status_code == 204
    assert not directory.exists()
    assert acme.get(f"/v1/erasures/{job_id}").status_code == 404
    assert acme.get(f"/v1/erasures/{job_id}/checkpoint").status_code == 404
    assert acme.delete(f"/v1/erasures/{job_id}").status_code == 404
