"""SD-3 on the tiny SD-3-layout pipeline: ``context_embedder`` reads CLIP-L+G tokens (zero-padded) then T5 tokens
and the pooled text embedder reads both CLIP projections; read through the pipeline's own prompt encoding, the
edited sites map targets onto anchors; deltas are deterministic and bound to their base; export, generation and
the CLI work end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from erasepro_core.adapters import adapter_for
from erasepro_core.cli import main
from erasepro_core.delta import Delta, DeltaMismatchError, applied_delta, apply_delta
from erasepro_core.encode import context_features
from erasepro_core.erasure import ErasureError, erase
from erasepro_core.features import prompt_ids
from erasepro_core.formats import FormatError
from erasepro_core.lora import export_checkpoint
from erasepro_core.pipeline import generate, load_pipeline
from erasepro_core.preserve import FeatureCache
from erasepro_core.tiny import tiny_sd3_pipeline, write_tiny_sd3

EDITS = [{"target": "van gogh", "anchor": "a painter"}, {"target": "red circle", "anchor": "blue square"}]
TEMPLATES = ["{}", "a photo of {}"]
TOKEN_SITE = "transformer.context_embedder.weight"
POOLED_SITE = "transformer.time_text_embed.text_embedder.linear_1.weight"
N_CLIP = 77


@pytest.fixture(scope="module")
def pipe():
    p = tiny_sd3_pipeline(0)
    p.set_progress_bar_config(disable=True)
    return p


def _spec(**kw) -> dict:
    return {"edits": EDITS, "templates": TEMPLATES, **kw}


def _encode(pipe, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The joint token sequence (77 CLIP tokens, then T5's) and the pooled vector, as the pipeline samples with."""
    n = int(pipe.tokenizer_3.model_max_length) if pipe.tokenizer_3 is not None else 32
    emb, _, pooled, _ = pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=False,
                                           max_sequence_length=n)
    return emb.double(), pooled.double()


def _last(tok, prompt: str) -> int:
    return max(len(prompt_ids(tok, prompt)) - 2, 0)


def test_adapter_describes_segments_and_pooled_space(pipe) -> None:
    a = adapter_for(pipe)
    assert a.family == "sd3" and a.sampling == (28, 7.0) and a.call_kwargs == {"max_sequence_length": 32}
    assert [[t.component for t in s.towers] for s in a.segments] == [["text_encoder", "text_encoder_2"],
                                                                     ["text_encoder_3"]]
    assert [s.context_width for s in a.segments] == [32 + 48, 96] and a.context_width == 96
    assert [[s.key for s in space.kv_sites] for space in a.spaces] == [[TOKEN_SITE], [POOLED_SITE]]
    assert a.also[0].context_width == 24 + 40  # the CLIP projections, not the towers' widths
    assert not any(t.progressive for t in a.towers[:2]) and a.towers[2].progressive


def test_context_features_are_the_pipelines(pipe) -> None:
    prompts = ["a photo of van gogh", "a red circle, high quality"]
    emb, _ = _encode(pipe, prompts)
    # default positions: the last word token in each segment; CLIP's features zero-padded to T5's width
    ours = context_features(pipe, prompts).double()
    cl, t5 = [_last(pipe.tokenizer, p) for p in prompts], [_last(pipe.tokenizer_3, p) for p in prompts]
    ref = torch.stack([emb[0, cl[0]], emb[0, N_CLIP + t5[0]], emb[1, cl[1]], emb[1, N_CLIP + t5[1]]], 1)
    assert ours.shape == (96, 4) and (ours - ref).abs().max() < 1e-5
    assert ours[80:, 0].abs().max() == 0  # the padding
    # any positions along the joint sequence, in the order given (padding and T5's last position included)
    positions = [[N_CLIP + 31, 3, 76], [0]]
    got = context_features(pipe, prompts, positions).double()
    want = torch.stack([emb[0, N_CLIP + 31], emb[0, 3], emb[0, 76], emb[1, 0]], 1)
    assert (got - want).abs().max() < 1e-5
    with pytest.raises(ValueError, match="outside 0..108"):
        context_features(pipe, prompts, [[109], []])


def _check_maps(pipe, result, pooled: bool = True) -> None:
    """Through the pipeline's own encoding: edited sites on targets == original sites on anchors, at the last
    word token of both segments and on the pooled vector."""
    targets = [t.format(e["target"]) for e in EDITS for t in TEMPLATES]
    anchors = [t.format(e["anchor"]) for e in EDITS for t in TEMPLATES]
    tr = pipe.transformer
    w_tok = tr.context_embedder.weight.double().clone()
    w_pool = tr.time_text_embed.text_embedder.linear_1.weight.double().clone()
    emb_a, pool_a = _encode(pipe, anchors)
    with applied_delta(pipe, result.delta):
        emb_t, pool_t = _encode(pipe, targets)
        new_tok = tr.context_embedder.weight.double()
        new_pool = tr.time_text_embed.text_embedder.linear_1.weight.double()
        if pooled:
            want, got = pool_a @ w_pool.T, pool_t @ new_pool.T
            assert (got - want).norm() <= 1e-5 * want.norm()
        segments = [(pipe.tokenizer, 0)] + ([(pipe.tokenizer_3, N_CLIP)] if pipe.tokenizer_3 is not None else [])
        for r, (t, a) in enumerate(zip(targets, anchors, strict=True)):
            for tok, start in segments:
                got = new_tok @ emb_t[r, start + _last(tok, t)]
                want = w_tok @ emb_a[r, start + _last(tok, a)]
                assert (got - want).norm() <= 1e-5 * want.norm(), (t, start)


@pytest.mark.parametrize("kw", [{}, {"schedule": "front"}, {"token_policy": "to_eos"}, {"method": "uce"}])
def test_sites_map_targets_onto_anchors(pipe, kw: dict) -> None:
    result = erase(pipe, _spec(**kw))
    sites = {s["site"]: s for s in result.report["sites"]}
    expected = {TOKEN_SITE, POOLED_SITE}
    if kw.get("schedule") == "front":  # the progressive stage edits T5's wo layers only
        expected |= {f"text_encoder_3.encoder.block.{i}.layer.1.DenseReluDense.wo.weight" for i in (0, 1)}
        assert result.report["layers"] == {"text_encoder": [], "text_encoder_2": [], "text_encoder_3": [0, 1]}
    assert set(result.delta.tensors) == expected
    # last policy: one CLIP and one T5 column per target prompt, plus one pooled column per prompt
    if not kw:
        assert result.report["n_constraints"] == 3 * len(EDITS) * len(TEMPLATES)
    if kw.get("method") == "uce":  # a least-squares baseline: no zero-residual promise
        assert sites[TOKEN_SITE]["residual"] > 1e-3
        return
    assert all(s["residual"] <= 1e-5 for s in sites.values()), {k: s["residual"] for k, s in sites.items()}
    _check_maps(pipe, result)


def test_without_t5_the_clip_segment_alone_is_edited() -> None:
    pipe = tiny_sd3_pipeline(0, with_t5=False)
    assert [[t.component for t in s.towers] for s in adapter_for(pipe).segments] == [["text_encoder",
                                                                                      "text_encoder_2"]]
    result = erase(pipe, _spec(), cache=FeatureCache(store=None))
    assert result.report["summary"]["max_residual"] <= 1e-5
    _check_maps(pipe, result)


def test_extra_context_columns_are_met(pipe) -> None:
    x = context_features(pipe, ["a round shape"])
    y = context_features(pipe, ["a shape"])
    result = erase(pipe, _spec(), extra_context=(x, y))
    assert result.report["n_extra_constraints"] == 2
    assert result.report["summary"]["kv_extra_residual"] <= 1e-5
    with pytest.raises(ErasureError, match="hardening is not available"):
        erase(pipe, _spec(harden_rounds=1))


def test_deltas_are_byte_identical_and_bound_to_their_base(pipe, tmp_path: Path) -> None:
    a = erase(pipe, _spec(schedule="front")).delta.save(tmp_path / "a.safetensors")
    b = erase(pipe, _spec(schedule="front")).delta.save(tmp_path / "b.safetensors")
    da, db = Delta.load(a), Delta.load(b)
    assert da.fingerprint == db.fingerprint and sorted(da.tensors) == sorted(db.tensors)
    assert all(da.tensors[k].numpy().tobytes() == db.tensors[k].numpy().tobytes() for k in da.tensors)
    assert da.base["family"] == "sd3"
    apply_delta(tiny_sd3_pipeline(0), a)  # the same base, built again: accepted
    with pytest.raises(DeltaMismatchError, match="made for base .* apply it to the model it was computed on"):
        apply_delta(tiny_sd3_pipeline(1), a)


def test_generation_changes_only_under_the_delta(pipe) -> None:
    kw = {"seed": 3, "steps": 2}
    base = generate(pipe, "a photo of van gogh", **kw)[0]
    assert base.size == (32, 32)  # the VAE's sample size
    delta = erase(pipe, _spec()).delta
    with applied_delta(pipe, delta):
        edited = generate(pipe, "a photo of van gogh", **kw)[0]
    again = generate(pipe, "a photo of van gogh", **kw)[0]
    assert edited.tobytes() != base.tobytes()
    assert again.tobytes() == base.tobytes()


def test_export_and_cli_journey(tmp_path: Path, capsys) -> None:
    model, other = write_tiny_sd3(tmp_path / "sd3"), write_tiny_sd3(tmp_path / "sd3-other", seed=1)
    delta, report = tmp_path / "d.safetensors", tmp_path / "r.json"
    assert main(["erase", "--model", str(model), "--target", "van gogh", "--anchor", "a painter", "--schedule",
                 "front", "--out", str(delta), "--report", str(report)]) == 0
    assert json.loads(report.read_text())["summary"]["max_residual"] <= 1e-5
    out = tmp_path / "img.png"
    assert main(["generate", "--model", str(model), "--delta", str(delta), "--prompt", "van gogh", "--steps", "2",
                 "--out", str(out)]) == 0
    assert Image.open(out).size == (32, 32)
    capsys.readouterr()
    assert main(["generate", "--model", str(other), "--delta", str(delta), "--prompt", "van gogh", "--steps", "2",
                 "--out", str(tmp_path / "no.png")]) == 2
    assert "delta was made for base" in capsys.readouterr().err

    # export: a full diffusers folder holds the edited weights (T5's progressive edits included)
    base = load_pipeline(model, device="cpu")
    d = Delta.load(delta)
    folder = export_checkpoint(base, d, tmp_path / "export", "diffusers")
    edited = load_pipeline(folder, device="cpu")
    assert torch.equal(edited.transformer.context_embedder.weight, d.tensors[TOKEN_SITE])
    wo = "text_encoder_3.encoder.block.1.layer.1.DenseReluDense.wo.weight"
    assert torch.equal(edited.text_encoder_3.encoder.block[1].layer[1].DenseReluDense.wo.weight, d.tensors[wo])
    assert torch.equal(base.transformer.context_embedder.weight, load_pipeline(model).transformer.context_embedder
                       .weight)  # the base is left as it was
    # no LoRA loader addresses T5: the progressive edit is refused by name
    with pytest.raises(FormatError, match=r"text_encoder_3\.encoder\.block\.\d+\.layer\.1\.DenseReluDense\.wo"):
        export_checkpoint(base, d, tmp_path / "lora", "lora")


def test_default_edit_exports_as_an_exact_lora(pipe, tmp_path: Path) -> None:
    """The two transformer sites as a diffusers/PEFT LoRA: StableDiffusion3Pipeline.load_lora_weights reads it and
    the sites then compute what apply_delta's weights do; kohya has no SD-3 names."""
    import copy

    from erasepro_core.lora import PEFT_WEIGHTS

    delta = erase(pipe, _spec()).delta
    out = export_checkpoint(pipe, delta, tmp_path / "lora", "lora")
    assert (out / PEFT_WEIGHTS).is_file()
    loaded = copy.deepcopy(pipe)
    loaded.load_lora_weights(str(out))
    torch.manual_seed(0)
    for key, new in delta.tensors.items():
        path = key.removesuffix(".weight").partition(".")[2]
        module = loaded.transformer.get_submodule(path)
        x = torch.randn(5, module.in_features)
        with torch.no_grad():
            got, base = module(x), pipe.transformer.get_submodule(path)(x)
        want = base + x @ (new - pipe.transformer.get_submodule(path).weight).T.detach()
        assert (got - want).norm() <= 1e-5 * want.norm(), key
        assert (base - want).norm() > 1e-3 * want.norm(), key  # the edit is visible at this scale
    with pytest.raises(FormatError, match="kohya"):
        export_checkpoint(pipe, delta, tmp_path / "kohya", "kohya")


def test_warmup_covers_every_segment(pipe) -> None:
    from erasepro_core.warmup import warm

    cache = FeatureCache(store=None)
    first = warm(pipe, cache)["modes"]["last"]["computed"]
    # CLIP segment: its context; T5 segment: its context and two wo layers; pooled CLIP: its context
    assert sorted(first) == ["ctx", "ctx", "ctx", "fc2.0.0", "fc2.0.1"]
    assert warm(pipe, cache)["modes"]["last"]["computed"] == []


def test_layouts_the_pipeline_would_encode_otherwise_are_refused(pipe) -> None:
    from erasepro_core.adapters import UnsupportedModelError

    for tok, value, match in ((pipe.tokenizer_3, 1024, "encodes at most 512 T5 tokens"),
                              (pipe.tokenizer_2, 64, "pad to different lengths")):
        old = tok.model_max_length
        tok.model_max_length = value
        try:
            with pytest.raises(UnsupportedModelError, match=match):
                adapter_for(pipe)
        finally:
            tok.model_max_length = old
    adapter_for(pipe)  # restored
