"""Checkpoint deltas: round trip, provenance, refusal on a wrong base, naming across transformers versions."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from erasepro_core import erase
from erasepro_core.delta import (
    Delta,
    DeltaFormatError,
    DeltaMismatchError,
    applied_delta,
    apply_delta,
)
from erasepro_core.pipeline import generate, load_pipeline, save_pipeline
from erasepro_core.spec import ErasureSpec

SPEC = ErasureSpec(edits=[{"target": "van gogh", "anchor": "art"}], templates=["{}", "a photo of {}"])


@pytest.fixture(scope="module")
def result(sd_pipe):
    return erase(sd_pipe, SPEC)


def test_round_trip_keeps_tensors_and_metadata(tmp_path, result):
    path = result.delta.save(tmp_path / "d.safetensors")
    loaded = Delta.load(path)
    assert loaded.fingerprint == result.delta.fingerprint
    assert loaded.spec == SPEC.model_dump(mode="json")
    assert loaded.report["summary"] == json.loads(json.dumps(result.report["summary"]))
    assert all(torch.equal(loaded.tensors[k], v) for k, v in result.delta.tensors.items())
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert keys == set(result.delta.tensors)
    assert meta["format"] == "erasepro-delta" and meta["library_version"]


def test_only_edited_tensors_with_on_disk_names(result):
    keys = list(result.delta.tensors)
    assert all(k.startswith(("unet.", "text_encoder.")) for k in keys)
    assert all(k.endswith((".attn2.to_k.weight", ".attn2.to_v.weight", ".mlp.fc2.weight")) for k in keys)
    # every published SD checkpoint (transformers < 5) nests the CLIP text model under text_model.
    assert all(k.startswith("text_encoder.text_model.encoder.layers.") for k in keys if k.startswith("text_e"))


def test_saving_twice_gives_identical_tensor_bytes(tmp_path, result):
    a = result.delta.save(tmp_path / "a.safetensors")
    b = result.delta.save(tmp_path / "b.safetensors")
    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        assert all(torch.equal(fa.get_tensor(k), fb.get_tensor(k)) for k in fa.keys())


def test_applied_delta_edits_then_restores_exactly(sd_pipe, result):
    before = {k: v.clone() for k, v in sd_pipe.unet.state_dict().items()}
    with applied_delta(sd_pipe, result.delta):
        changed = [k for k, v in sd_pipe.unet.state_dict().items() if not torch.equal(before[k], v)]
        assert changed and all("attn2.to_" in k for k in changed)
    assert all(torch.equal(before[k], v) for k, v in sd_pipe.unet.state_dict().items())


def test_refuses_a_different_base(result):
    from erasepro_core.tiny import tiny_sd_pipeline

    other = tiny_sd_pipeline(seed=1)
    with pytest.raises(DeltaMismatchError, match="was made for base"):
        apply_delta(other, result.delta)


def test_refuses_a_base_that_already_has_the_delta(sd_copy, result):
    apply_delta(sd_copy, result.delta)
    with pytest.raises(DeltaMismatchError):
        apply_delta(sd_copy, result.delta)


def test_legacy_and_new_text_encoder_names_both_load(tmp_path, sd_copy, result):
    # Rewrite the keys the transformers-5 way (no text_model.) and apply: same weights result.
    renamed = {k.replace("text_encoder.text_model.", "text_encoder."): v for k, v in result.delta.tensors.items()}
    delta = Delta(tensors=renamed, fingerprint="", spec=result.delta.spec)
    from erasepro_core.adapters import resolve_parameter
    from erasepro_core.delta import fingerprint

    delta.fingerprint = fingerprint({k: resolve_parameter(sd_copy, k) for k in renamed})
    apply_delta(sd_copy, delta)
    for k, v in result.delta.tensors.items():
        assert torch.equal(resolve_parameter(sd_copy, k), v)


def test_not_a_delta_is_a_clear_error(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(DeltaFormatError, match="not an ErasePro delta"):
        Delta.load(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(DeltaFormatError):
        Delta.load(junk)


def test_export_full_pipeline_matches_applied_delta(tmp_path, sd_pipe, result):
    base_dir = save_pipeline(sd_pipe, tmp_path / "base")
    pipe = load_pipeline(base_dir, device="cpu")
    with applied_delta(pipe, result.delta):
        want = generate(pipe, "van gogh", steps=2, seed=3)[0]
        save_pipeline(pipe, tmp_path / "edited")
    edited = load_pipeline(tmp_path / "edited", device="cpu")
    got = generate(edited, "van gogh", steps=2, seed=3)[0]
    assert got.tobytes() == want.tobytes()
    base_img = generate(pipe, "van gogh", steps=2, seed=3)[0]
    assert base_img.tobytes() != want.tobytes()
