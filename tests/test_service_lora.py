"""LoRA checkpoints through the service: ``GET /v1/erasures/{id}/checkpoint?format=lora|kohya`` exports on
demand, the tar holds the weights and a model card, and plain diffusers loads it to apply_delta's outputs; a
format that cannot carry the erasure is a 422 naming the sites."""

from __future__ import annotations

import copy
import hashlib
import io
import tarfile

import httpx
import pytest
import torch

from erasepro_core.delta import Delta, apply_delta

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import Stack, submit, wait_for, wait_status  # noqa: E402

pytest_plugins = ["service_fixtures"]

WEIGHTS = {"lora": "pytorch_lora_weights.safetensors", "kohya": "erasepro_lora.safetensors"}


def _download(client: httpx.Client, jid: str, fmt: str) -> httpx.Response:
    url = f"/v1/erasures/{jid}/checkpoint"
    first = client.get(url, params={"format": fmt})
    assert first.status_code in (200, 202), first.text
    return wait_for(lambda: (lambda x: x if x.status_code == 200 else None)(
        client.get(url, params={"format": fmt}, follow_redirects=True)), f"the {fmt} export", every=0.25)


@pytest.mark.parametrize("fmt", ["lora", "kohya"])
def test_lora_export_over_http_loads_in_plain_diffusers(svc: Stack, acme: httpx.Client, tmp_path, fmt) -> None:
    from diffusers import StableDiffusionPipeline

    jid = submit(acme, {"base_model": "tiny", "edits": [{"target": "a cat", "anchor": "a dog"}],
                        "options": {"schedule": "front"}})
    assert wait_status(acme, jid)["status"] == "succeeded", svc.log_tail()
    r = _download(acme, jid, fmt)
    assert r.headers["content-type"] == "application/x-tar"
    assert r.headers["etag"] == f'"{hashlib.sha256(r.content).hexdigest()}"'
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        assert sorted(tar.getnames()) == sorted([f"erasepro-{jid}-{fmt}", f"erasepro-{jid}-{fmt}/README.md",
                                                  f"erasepro-{jid}-{fmt}/{WEIGHTS[fmt]}"])
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / f"erasepro-{jid}-{fmt}"
    assert "fingerprint" in (folder / "README.md").read_text()
    (tmp_path / "d.safetensors").write_bytes(acme.get(f"/v1/erasures/{jid}/checkpoint").content)
    delta = Delta.load(tmp_path / "d.safetensors")

    base = StableDiffusionPipeline.from_pretrained(str(svc.models_dir / "tiny"))
    plain = copy.deepcopy(base)
    plain.load_lora_weights(str(folder), weight_name=WEIGHTS[fmt])
    apply_delta(base, delta)
    ids = base.tokenizer(["a photo of a cat"], return_tensors="pt").input_ids
    with torch.no_grad():
        want, got = base.text_encoder(ids)[0], plain.text_encoder(ids)[0]
        assert float((got - want).norm() / want.norm()) < 1e-4
        for key in (k for k in delta.tensors if k.startswith("unet.")):
            name = key.removeprefix("unet.").removesuffix(".weight")
            x = torch.randn(3, base.unet.get_submodule(name).in_features)
            want, got = base.unet.get_submodule(name)(x), plain.unet.get_submodule(name)(x)
            assert float((got - want).norm() / want.norm()) < 1e-4, key
    view = acme.get(f"/v1/erasures/{jid}").json()
    assert view["artifacts"][f"{fmt}.tar"]["sha256"] == hashlib.sha256(r.content).hexdigest()


def test_a_format_that_cannot_carry_the_erasure_is_422(svc: Stack, acme: httpx.Client) -> None:
    jid = submit(acme, {"base_model": "flux", "edits": [{"target": "van gogh", "anchor": "a painter"}],
                        "options": {"templates": ["{}"], "schedule": "front"}})
    assert wait_status(acme, jid)["status"] == "succeeded", svc.log_tail()
    for fmt in ("lora", "kohya"):
        r = acme.get(f"/v1/erasures/{jid}/checkpoint", params={"format": fmt})
        assert r.status_code == 422, r.text
        assert f"the {fmt} format cannot carry this flux edit" in r.json()["detail"] and "DenseReluDense.wo" in r.text
    assert acme.get(f"/v1/erasures/{jid}/checkpoint", params={"format": "ckpt"}).status_code == 422
