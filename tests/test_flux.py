"""FLUX on the tiny FLUX.1-layout pipeline: the edited sites, read through the pipeline's own prompt encoding,
map targets onto anchors; deltas are deterministic and bound to their base; the CLI journey works end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from erasepro_core.adapters import adapter_for
from erasepro_core.cli import main
from erasepro_core.delta import Delta, DeltaMismatchError, applied_delta, apply_delta
from erasepro_core.encode import context_features
from erasepro_core.erasure import erase
from erasepro_core.features import build_pairs, prompt_ids
from erasepro_core.pipeline import generate
from erasepro_core.tiny import tiny_flux_pipeline, write_tiny_flux

EDITS = [{"target": "van gogh", "anchor": "a painter"}, {"target": "red circle", "anchor": "blue square"}]
TEMPLATES = ["{}", "a photo of {}"]
TOKEN_SITE = "transformer.context_embedder.weight"
POOLED_SITE = "transformer.time_text_embed.text_embedder.linear_1.weight"


@pytest.fixture(scope="module")
def pipe():
    p = tiny_flux_pipeline(0)
    p.set_progress_bar_config(disable=True)
    return p


def _spec(**kw) -> dict:
    return {"edits": EDITS, "templates": TEMPLATES, **kw}


def _encode(pipe, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """T5 token features and pooled CLIP, exactly as FluxPipeline computes them for sampling."""
    n = int(pipe.tokenizer_2.model_max_length)
    emb, pooled, _ = pipe.encode_prompt(prompts, prompt_2=None, max_sequence_length=n)
    return emb.double(), pooled.double()


def test_adapter_describes_both_context_spaces(pipe) -> None:
    a = adapter_for(pipe)
    assert a.family == "flux"
    assert [[s.key for s in space.kv_sites] for space in a.spaces] == [[TOKEN_SITE], [POOLED_SITE]]
    assert [t.component for t in a.towers] == ["text_encoder_2"]
    assert a.also[0].towers[0].pooled and not a.towers[0].causal
    assert a.towers[0].fc2_name(1) == "text_encoder_2.encoder.block.1.layer.1.DenseReluDense.wo.weight"
    # T5 has no BOS: the concept's last token is its own position, and a pooled tower pairs EOS with EOS
    pairs = build_pairs(pipe.tokenizer_2, [("van gogh", "")], ["{}"], "last")
    assert pairs.positions == [(0, 1, 0, 0)]  # "▁van ▁gogh </s>" ↔ the empty prompt's "</s>"
    pooled = build_pairs(pipe.tokenizer, [("van gogh", "a painter")], ["a photo of {}"], "to_eos", pooled=True)
    assert pooled.positions == [(0, len(pooled.target_ids[0]) - 1, 0, len(pooled.anchor_ids[0]) - 1)]


def test_features_are_the_pipelines(pipe) -> None:
    """T5 is bidirectional and unmasked: features must be taken at the pipeline's padded length."""
    prompts = ["a photo of van gogh", "a red circle, high quality"]
    positions = [[len(prompt_ids(pipe.tokenizer_2, p)) - 2, 31] for p in prompts]
    emb, _ = _encode(pipe, prompts)
    ours = context_features(pipe, prompts, positions).double()
    ref = torch.stack([emb[i, p] for i, ps in enumerate(positions) for p in ps], 1)
    assert (ours - ref).abs().max() < 1e-5
    # the same prompt encoded without the padding gives other features: the padding must not be dropped
    t5 = pipe.text_encoder_2
    ids = torch.tensor([prompt_ids(pipe.tokenizer_2, prompts[0])])
    unpadded = t5(ids).last_hidden_state[0, positions[0][0]].double()
    assert (unpadded - ref[:, 0]).norm() > 1e-3 * ref[:, 0].norm()


# to_eos puts more columns than a quarter of the tiny T5's width: residual_ridge 0 keeps that solve exact
@pytest.mark.parametrize("kw", [{"schedule": "front"}, {"token_policy": "to_eos", "residual_ridge": 0.0},
                                {"method": "uce"}])
def test_sites_map_targets_onto_anchors(pipe, kw: dict) -> None:
    result = erase(pipe, _spec(**kw))
    sites = {s["site"]: s for s in result.report["sites"]}
    assert {TOKEN_SITE, POOLED_SITE} <= set(sites)
    expected = {TOKEN_SITE, POOLED_SITE}
    if kw.get("schedule") == "front":
        expected |= {f"text_encoder_2.encoder.block.{i}.layer.1.DenseReluDense.wo.weight" for i in (0, 1)}
    assert set(result.delta.tensors) == expected
    if kw.get("method") == "uce":  # a least-squares baseline: no zero-residual promise
        assert sites[TOKEN_SITE]["residual"] > 1e-3
        return
    assert all(s["residual"] <= 1e-5 for s in sites.values()), {k: s["residual"] for k, s in sites.items()}

    # Through the pipeline's own encoding: edited site on targets == original site on anchors.
    targets = [t.format(e["target"]) for e in EDITS for t in TEMPLATES]
    anchors = [t.format(e["anchor"]) for e in EDITS for t in TEMPLATES]
    tr = pipe.transformer
    w_tok, w_pool = tr.context_embedder.weight.double().clone(), tr.time_text_embed.text_embedder.linear_1.weight
    w_pool = w_pool.double().clone()
    emb_a, pool_a = _encode(pipe, anchors)
    with applied_delta(pipe, result.delta):
        emb_t, pool_t = _encode(pipe, targets)
        new_tok = tr.context_embedder.weight.double()
        new_pool = tr.time_text_embed.text_embedder.linear_1.weight.double()
        want_pool, got_pool = pool_a @ w_pool.T, pool_t @ new_pool.T
        assert (got_pool - want_pool).norm() <= 1e-5 * want_pool.norm()
        tok = pipe.tokenizer_2
        for r, (t, a) in enumerate(zip(targets, anchors, strict=True)):
            pt, pa = len(prompt_ids(tok, t)) - 2, max(len(prompt_ids(tok, a)) - 2, 0)
            got, want = new_tok @ emb_t[r, pt], w_tok @ emb_a[r, pa]
            assert (got - want).norm() <= 1e-5 * want.norm()


def test_deltas_are_byte_identical_and_bound_to_their_base(pipe, tmp_path: Path) -> None:
    a = erase(pipe, _spec(schedule="front")).delta.save(tmp_path / "a.safetensors")
    b = erase(pipe, _spec(schedule="front")).delta.save(tmp_path / "b.safetensors")
    da, db = Delta.load(a), Delta.load(b)  # two runs: the same bytes in every tensor (the report's timings differ)
    assert da.fingerprint == db.fingerprint and sorted(da.tensors) == sorted(db.tensors)
    assert all(da.tensors[k].numpy().tobytes() == db.tensors[k].numpy().tobytes() for k in da.tensors)
    assert da.report["sites"] == db.report["sites"]
    other = tiny_flux_pipeline(1)
    with pytest.raises(DeltaMismatchError, match="made for base .* apply it to the model it was computed on"):
        apply_delta(other, a)
    assert Delta.load(a).base["family"] == "flux"


def test_generation_changes_only_under_the_delta(pipe) -> None:
    kw = {"seed": 3, "steps": 2}
    base = generate(pipe, "a photo of van gogh", **kw)[0]
    assert base.size == (32, 32)  # the VAE's sample size: a transformer has no UNet sample size
    delta = erase(pipe, _spec()).delta
    with applied_delta(pipe, delta):
        edited = generate(pipe, "a photo of van gogh", **kw)[0]
    again = generate(pipe, "a photo of van gogh", **kw)[0]
    assert edited.tobytes() != base.tobytes()
    assert again.tobytes() == base.tobytes()


def test_cli_journey(tmp_path: Path, capsys) -> None:
    model, other = write_tiny_flux(tmp_path / "flux"), write_tiny_flux(tmp_path / "flux-other", seed=1)
    delta, report = tmp_path / "d.safetensors", tmp_path / "r.json"
    assert main(["erase", "--model", str(model), "--target", "van gogh", "--anchor", "a painter", "--schedule",
                 "front", "--out", str(delta), "--report", str(report)]) == 0
    # keys are the components' on-disk names
    for key in Delta.load(delta).tensors:
        comp, _, name = key.partition(".")
        (weights,) = (model / comp).glob("*.safetensors")
        with safe_open(str(weights), framework="pt") as f:
            assert name in f.keys(), key
    assert json.loads(report.read_text())["summary"]["max_residual"] <= 1e-5
    out = tmp_path / "img.png"
    assert main(["generate", "--model", str(model), "--delta", str(delta), "--prompt", "van gogh", "--steps", "2",
                 "--out", str(out)]) == 0
    assert Image.open(out).size == (32, 32)
    capsys.readouterr()
    assert main(["generate", "--model", str(other), "--delta", str(delta), "--prompt", "van gogh", "--steps", "2",
                 "--out", str(tmp_path / "no.png")]) == 2
    err = capsys.readouterr().err
    assert "delta was made for base" in err and "apply it to the model it was computed on" in err
    assert not (tmp_path / "no.png").exists()


def test_t5_rows_in_several_blocks_give_the_same_features(pipe, monkeypatch) -> None:
    """The padded T5 batch is split into blocks of rows; where the split falls must not matter."""
    from erasepro_core.prefix import PaddedBatch

    spec = _spec(schedule="front")
    one = erase(pipe, spec).delta.tensors
    monkeypatch.setattr(PaddedBatch, "rows_per_block", 3)
    split = erase(pipe, spec).delta.tensors
    assert all(torch.allclose(one[k], split[k], rtol=1e-5, atol=1e-7) for k in one)


def test_warmup_covers_both_context_spaces(pipe) -> None:
    from erasepro_core.preserve import FeatureCache
    from erasepro_core.warmup import warm

    cache = FeatureCache(store=None)
    first = warm(pipe, cache)["modes"]["last"]["computed"]
    # T5: the context and its two wo layers; pooled CLIP: its context only (no progressive stage there)
    assert sorted(first) == ["ctx", "ctx", "fc2.0.0", "fc2.0.1"]
    assert warm(pipe, cache)["modes"]["last"]["computed"] == []
