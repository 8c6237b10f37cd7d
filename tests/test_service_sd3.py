"""The service's journey with an SD-3 base model: the registry's facts and bounds, erase over HTTP, download the
delta, generate with the family's defaults (28 steps, guidance 7.0, the VAE's resolution) from the base and the
edited model."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from erasepro_core.delta import Delta, applied_delta
from erasepro_core.pipeline import load_pipeline

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import Stack, submit, wait_status  # noqa: E402

pytest_plugins = ["service_fixtures"]

SPEC = {"base_model": "sd3", "edits": [{"target": "van gogh", "anchor": "a painter"}],
        "options": {"templates": ["{}", "a photo of {}"], "schedule": "front"}}


def test_sd3_registry_entry_and_bounds(acme: httpx.Client) -> None:
    items = {m["name"]: m for m in acme.get("/v1/base-models").json()["items"]}
    sd3 = items["sd3"]
    assert sd3["available"] and sd3["family"] == "sd3"
    assert sd3["text_layers"] == 2  # T5's blocks: the only tower SD-3's progressive stage edits
    assert sd3["limits"]["resolution"] == 32  # the VAE's sample size, as generation uses
    # a progressive layer T5 does not have is refused at the door, naming the field
    r = acme.post("/v1/erasures", json={**SPEC, "options": {**SPEC["options"], "layers": [0, 2]}})
    assert r.status_code == 422, r.text
    assert any(e["loc"][-2:] == ["layers", 1] for e in r.json()["errors"]), r.text


def test_sd3_erasure_and_generation_over_http(svc: Stack, acme: httpx.Client, tmp_path) -> None:
    job_id = submit(acme, SPEC)
    view = wait_status(acme, job_id)
    assert view["status"] == "succeeded", (view, svc.log_tail())
    r = acme.get(f"/v1/erasures/{job_id}/checkpoint", params={"format": "delta"})
    assert r.status_code == 200
    (tmp_path / "d.safetensors").write_bytes(r.content)
    delta = Delta.load(tmp_path / "d.safetensors")
    assert delta.base["family"] == "sd3"
    assert sorted(delta.tensors) == [
        *(f"text_encoder_3.encoder.block.{i}.layer.1.DenseReluDense.wo.weight" for i in (0, 1)),
        "transformer.context_embedder.weight", "transformer.time_text_embed.text_embedder.linear_1.weight"]
    assert delta.report["summary"]["max_residual"] <= 1e-5
    with applied_delta(load_pipeline(svc.models_dir / "sd3", device="cpu"), delta):
        pass  # the downloaded delta fits the registered SD-3 folder (fingerprint checked)

    body = {"prompt": "a photo of van gogh", "seed": 1}  # no steps, guidance or size: the family's defaults
    base = acme.post("/v1/base-models/sd3/generate", json=body)
    edited = acme.post(f"/v1/erasures/{job_id}/generate", json=body)
    assert base.status_code == edited.status_code == 200, (base.text, edited.text)
    assert Image.open(io.BytesIO(base.content)).size == (32, 32)
    assert edited.content != base.content


def test_sd3_hub_entry_resolution_and_dtype() -> None:
    from erasepro_jobs.registry import parse_registry
    from worker.cache import pick_dtype

    info = parse_registry('[models.s]\nhub_id = "stabilityai/stable-diffusion-3.5-medium"\nfamily = "sd3"\n')["s"]
    assert info.limits.resolution == 1024 and info.text_layers is None  # no local configs: the family's size
    assert pick_dtype(info, "cuda") == "bfloat16" and pick_dtype(info, "cpu") == "float32"
