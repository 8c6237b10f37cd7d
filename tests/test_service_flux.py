"""The service's journey with a FLUX base model: erase over HTTP, download the delta, generate with the family's
defaults (28 steps, guidance 3.5, the VAE's resolution) from the base and the edited model."""

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

SPEC = {"base_model": "flux", "edits": [{"target": "van gogh", "anchor": "a painter"}],
        "options": {"templates": ["{}", "a photo of {}"]}}


def test_flux_erasure_and_generation_over_http(svc: Stack, acme: httpx.Client, tmp_path) -> None:
    job_id = submit(acme, SPEC)
    view = wait_status(acme, job_id)
    assert view["status"] == "succeeded", (view, svc.log_tail())
    r = acme.get(f"/v1/erasures/{job_id}/checkpoint", params={"format": "delta"})
    assert r.status_code == 200
    (tmp_path / "d.safetensors").write_bytes(r.content)
    delta = Delta.load(tmp_path / "d.safetensors")
    assert delta.base["family"] == "flux"
    assert sorted(delta.tensors) == ["transformer.context_embedder.weight",
                                     "transformer.time_text_embed.text_embedder.linear_1.weight"]
    assert delta.report["summary"]["max_residual"] <= 1e-5
    with applied_delta(load_pipeline(svc.models_dir / "flux", device="cpu"), delta):
        pass  # the downloaded delta fits the registered FLUX folder (fingerprint checked)

    body = {"prompt": "a photo of van gogh", "seed": 1}  # no steps, guidance or size: the family's defaults
    base = acme.post("/v1/base-models/flux/generate", json=body)
    edited = acme.post(f"/v1/erasures/{job_id}/generate", json=body)
    assert base.status_code == edited.status_code == 200, (base.text, edited.text)
    assert Image.open(io.BytesIO(base.content)).size == (32, 32)
    assert edited.content != base.content
