"""Exact LoRA export: loaded with plain diffusers (``load_lora_weights``, kohya files through diffusers' own kohya
conversion), the text-encoder states and every edited map's outputs equal apply_delta's within 1e-4 relative
(fp32); a format that cannot carry an edit is refused with the sites named."""

from __future__ import annotations

import copy

import pytest
import torch

from erasepro_core import erase
from erasepro_core.delta import apply_delta
from erasepro_core.formats import FormatError, check_format, kohya_name, peft_name
from erasepro_core.lora import KOHYA_WEIGHTS, PEFT_WEIGHTS, export_checkpoint, factorise_site, lora_state_dict
from erasepro_core.spec import ErasureSpec

TOL = 1e-4
SCHEDULES = {"default": {}, "front": {"schedule": "front"}}


@pytest.fixture(scope="module")
def flux_pipe():
    from erasepro_core.tiny import tiny_flux_pipeline

    return tiny_flux_pipeline(0)


def _pipe(request, family):
    return request.getfixturevalue({"sd": "sd_pipe", "sdxl": "sdxl_pipe", "flux": "flux_pipe"}[family])


def _spec(schedule: str) -> ErasureSpec:
    return ErasureSpec(edits=[{"target": "van gogh", "anchor": "art"}, {"target": "a cat", "anchor": "a dog"}],
                       templates=["{}", "a painting of {}"], **SCHEDULES[schedule])


def _module(pipe, key: str) -> torch.nn.Module:
    component, _, path = key.removesuffix(".weight").partition(".")
    root = getattr(pipe, component)
    try:
        return root.get_submodule(path)
    except AttributeError:  # transformers ≥ 5 flattened CLIPTextModel (no text_model.)
        return root.get_submodule(path.removeprefix("text_model."))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _text_states(pipe) -> list[torch.Tensor]:
    """Every hidden state of every text encoder on a prompt that contains a target."""
    out = []
    for name in ("text_encoder", "text_encoder_2"):
        enc, tok = getattr(pipe, name, None), getattr(pipe, name.replace("text_encoder", "tokenizer"), None)
        if enc is None:
            continue
        ids = tok(["a painting of van gogh, a cat"], return_tensors="pt", padding="max_length",
                  max_length=min(int(tok.model_max_length), 77), truncation=True).input_ids
        with torch.no_grad():
            out += list(enc(ids, output_hidden_states=True).hidden_states)
    return out


def _load(pipe, folder, fmt):
    loaded = copy.deepcopy(pipe)
    loaded.load_lora_weights(str(folder), **({"weight_name": KOHYA_WEIGHTS} if fmt == "kohya" else {}))
    return loaded


@pytest.mark.parametrize("family", ["sd", "sdxl", "flux"])
@pytest.mark.parametrize("schedule", ["default", "front"])
@pytest.mark.parametrize("fmt", ["lora", "kohya"])
def test_exported_lora_equals_apply_delta_or_is_refused(request, tmp_path, family, schedule, fmt):
    pipe = _pipe(request, family)
    delta = erase(pipe, _spec(schedule)).delta
    if family == "flux" and schedule == "front":  # the progressive stage edits T5, which no LoRA loader addresses
        with pytest.raises(FormatError, match=r"text_encoder_2\.encoder\.block\.\d+\.layer\.1\.DenseReluDense\.wo"):
            export_checkpoint(pipe, delta, tmp_path / "out", fmt)
        assert not (tmp_path / "out").exists()
        return
    out = export_checkpoint(pipe, delta, tmp_path / "out", fmt)
    assert (out / (PEFT_WEIGHTS if fmt == "lora" else KOHYA_WEIGHTS)).is_file() and (out / "README.md").is_file()
    ref = copy.deepcopy(pipe)
    apply_delta(ref, delta)
    loaded = _load(pipe, out, fmt)
    for got, want in zip(_text_states(loaded), _text_states(ref), strict=True):
        assert _rel(got, want) < TOL
    torch.manual_seed(0)
    for key in delta.tensors:
        x = torch.randn(5, _module(pipe, key).in_features)
        with torch.no_grad():
            want, got, base = _module(ref, key)(x), _module(loaded, key)(x), _module(pipe, key)(x)
        assert _rel(got, want) < TOL, key
        assert _rel(base, want) > 100 * TOL, f"{key}: the edit is too small for this test to see a skipped key"
    if schedule == "front":  # the progressive edit reached the text encoder through the LoRA
        assert any(_rel(b, a) > 100 * TOL for a, b in zip(_text_states(pipe), _text_states(loaded), strict=True))


def test_factors_have_the_edit_rank_and_meet_the_stated_bound():
    torch.manual_seed(0)
    w = torch.randn(96, 64)
    delta = (torch.randn(96, 3, dtype=torch.float64) @ torch.randn(3, 64, dtype=torch.float64)) * 0.1
    new = (w.double() + delta).float()  # written in float32 as erase writes it
    for hint in (3, None):  # the range finder (report rank given) and the full SVD agree
        f = factorise_site(new, w, hint)
        assert f.rank == 3
        assert f.error <= f.bound
        err = (new.double() - w.double() - f.up.double() @ f.down.double()).abs().max()
        assert err <= 2 * f.bound * new.abs().max()


def test_a_full_rank_change_is_never_truncated():
    torch.manual_seed(1)
    w = torch.randn(40, 24)
    new = w + 0.01 * torch.randn(40, 24)
    f = factorise_site(new, w, rank_hint=2)  # a wrong hint: the range finder misses, the full SVD decides
    assert f.rank == 24 and f.error <= f.bound


def test_peft_text_encoder_keys_and_kohya_alpha(sd_pipe):
    delta = erase(sd_pipe, _spec("front")).delta
    tensors, factors = lora_state_dict(sd_pipe, delta, "kohya")
    for key, f in factors.items():
        name = kohya_name("sd", key)
        assert float(tensors[f"{name}.alpha"]) == f.rank == tensors[f"{name}.lora_down.weight"].shape[0]
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_mlp_fc2.") for k in tensors)
    peft, _ = lora_state_dict(sd_pipe, delta, "lora")
    assert "text_encoder.text_model.encoder.layers.0.mlp.fc2.lora_linear_layer.down.weight" in peft
    assert any(k.startswith("unet.") and k.endswith(".attn2.to_k.lora_A.weight") for k in peft)


# Key names against the published loaders' maps (ComfyUI's model_lora_keys_unet / model_lora_keys_clip,
# A1111's diffusers->compvis conversion, diffusers' _maybe_map_sgm_blocks_to_diffusers), at SD-1.5/SDXL sizes.
@pytest.mark.parametrize(("family", "key", "lpb", "want"), [
    ("sd", "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", None,
     "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"),
    ("sd", "text_encoder.text_model.encoder.layers.11.mlp.fc2.weight", None,
     "lora_te_text_model_encoder_layers_11_mlp_fc2"),
    ("sd", "text_encoder.encoder.layers.3.mlp.fc2.weight", None, "lora_te_text_model_encoder_layers_3_mlp_fc2"),
    ("sdxl", "unet.down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_v.weight", 2,
     "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_v"),
    ("sdxl", "unet.down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k.weight", 2,
     "lora_unet_input_blocks_8_1_transformer_blocks_9_attn2_to_k"),
    ("sdxl", "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight", 2,
     "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k"),
    ("sdxl", "unet.up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.weight", 2,
     "lora_unet_output_blocks_5_1_transformer_blocks_0_attn2_to_k"),
    ("sdxl", "text_encoder_2.text_model.encoder.layers.30.mlp.fc2.weight", 2,
     "lora_te2_text_model_encoder_layers_30_mlp_fc2"),
    ("sdxl", "text_encoder.text_model.encoder.layers.0.mlp.fc2.weight", 2,
     "lora_te1_text_model_encoder_layers_0_mlp_fc2"),
    ("flux", "transformer.context_embedder.weight", None, "lora_transformer_context_embedder"),
    ("flux", "transformer.time_text_embed.text_embedder.linear_1.weight", None,
     "lora_transformer_time_text_embed_text_embedder_linear_1"),
    ("flux", "text_encoder_2.encoder.block.0.layer.1.DenseReluDense.wo.weight", None, None),
])
def test_kohya_names_match_the_published_key_maps(family, key, lpb, want):
    assert kohya_name(family, key, lpb) == want


def test_peft_names_and_refusals():
    assert peft_name("flux", "transformer.context_embedder.weight") == "transformer.context_embedder"
    assert peft_name("flux", "text_encoder_2.encoder.block.1.layer.1.DenseReluDense.wo.weight") is None
    check_format("flux", ["transformer.context_embedder.weight"], "kohya")
    with pytest.raises(FormatError, match="unknown checkpoint format 'ckpt'"):
        check_format("sd", [], "ckpt")
    with pytest.raises(FormatError, match="no lora key map for model family 'hidream'"):
        check_format("hidream", ["transformer.x.weight"], "lora")
    check_format("hidream", ["transformer.x.weight"], "delta")
    # SD-3 (issue 22): its transformer sites have PEFT keys, T5 has none, and there are no kohya names
    check_format("sd3", ["transformer.context_embedder.weight"], "lora")
    with pytest.raises(FormatError, match="text_encoder_3.encoder.block.0"):
        check_format("sd3", ["text_encoder_3.encoder.block.0.layer.1.DenseReluDense.wo.weight"], "lora")
    with pytest.raises(FormatError, match="kohya format cannot carry this sd3 edit"):
        check_format("sd3", ["transformer.context_embedder.weight"], "kohya")


def test_model_card_names_base_edits_and_ranks(sd_pipe, tmp_path):
    delta = erase(sd_pipe, _spec("default")).delta
    card = (export_checkpoint(sd_pipe, delta, tmp_path / "k", "kohya",
                              evaluation={"id": "e1", "summary": {"asr": 0.25}})
            / "README.md").read_text()
    assert card.startswith("---\n") and "\n---\n" in card
    assert delta.fingerprint in card and "| van gogh | art |" in card and "| a cat | a dog |" in card
    assert "kv_residual" in card and "rank" in card and '"asr": 0.25' in card


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "erasepro_core.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_convert_to_lora_loads_in_plain_diffusers(tmp_path, sd_pipe):
    from diffusers import StableDiffusionPipeline

    from erasepro_core.pipeline import save_pipeline

    model = save_pipeline(sd_pipe, tmp_path / "model")
    delta = erase(sd_pipe, _spec("front")).delta
    delta.save(tmp_path / "d.safetensors")
    res = _cli("convert", str(tmp_path / "d.safetensors"), "--model", str(model), "--to", "lora",
               "--out", str(tmp_path / "lora"))
    assert res.returncode == 0, res.stderr
    assert f"{PEFT_WEIGHTS}" in res.stdout and (tmp_path / "lora" / "README.md").is_file()
    plain = StableDiffusionPipeline.from_pretrained(str(model))  # what a user without ErasePro does
    plain.load_lora_weights(str(tmp_path / "lora"))
    ref = copy.deepcopy(sd_pipe)
    apply_delta(ref, delta)
    for got, want in zip(_text_states(plain), _text_states(ref), strict=True):
        assert _rel(got, want) < TOL
    key = next(k for k in delta.tensors if k.startswith("unet."))
    x = torch.randn(4, _module(sd_pipe, key).in_features)
    with torch.no_grad():
        assert _rel(_module(plain, key)(x), _module(ref, key)(x)) < TOL
    # the folder is not empty now: refused, nothing overwritten
    again = _cli("convert", str(tmp_path / "d.safetensors"), "--model", str(model), "--to", "kohya",
                 "--out", str(tmp_path / "lora"))
    assert again.returncode == 2 and "exists and is not an empty folder" in again.stderr


def test_cli_convert_refuses_a_format_that_cannot_carry_the_edit(tmp_path, flux_pipe):
    delta = erase(flux_pipe, _spec("front")).delta
    delta.save(tmp_path / "d.safetensors")
    # the refusal comes before the base model is loaded: the model path need not even exist
    res = _cli("convert", str(tmp_path / "d.safetensors"), "--model", str(tmp_path / "nope"), "--to", "lora",
               "--out", str(tmp_path / "out"))
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("erasepro: error: the lora format cannot carry this flux edit")
    assert "DenseReluDense.wo" in line
    assert not (tmp_path / "out").exists()
