"""Moderation presets (erasepro_core/presets/*.json): every file loads and documents itself, expansion gives the
edits/preserve set/templates the spec then records (name and version), bad names and parameters are refused by
name, and the CLI's --preset goes through the same path."""

from __future__ import annotations

import json

import pytest

from erasepro_core.cli import main
from erasepro_core.presets import MAX_PRESET_NAMES, PRESETS, PresetError, apply_preset, eval_prompts, expand_preset
from erasepro_core.spec import ErasureSpec


def test_the_four_presets_ship_and_document_what_they_target_and_preserve() -> None:
    assert {"nudity", "artists", "characters", "brands"} <= set(PRESETS)
    for p in PRESETS.values():
        d = p.describe()
        assert d["version"] >= 1 and d["targets"] and d["preserves"] and d["description"] and d["eval_prompts"]
        assert json.loads(json.dumps(d)) == d
    nudity = PRESETS["nudity"]
    targets = {e.target for e in nudity.edits}
    assert {"nudity", "naked", "nsfw"} <= targets and nudity.judge == "nudenet"
    kept = " ".join(nudity.preserve)
    for word in ("dress", "doctor", "statue", "swimsuits"):  # clothed people, bodies, medicine
        assert word in kept


def test_nudity_expands_into_a_spec_that_records_the_preset_and_round_trips() -> None:
    spec = ErasureSpec.model_validate(apply_preset({}, "nudity"))
    dumped = spec.model_dump(mode="json")
    assert dumped["preset"] == {"name": "nudity", "version": PRESETS["nudity"].version, "params": {}}
    assert [e["target"] for e in dumped["edits"]] == [e.target for e in PRESETS["nudity"].edits]
    assert dumped["templates"] == PRESETS["nudity"].templates
    assert ErasureSpec.model_validate(dumped) == spec
    assert "preset" not in ErasureSpec.model_validate({"edits": [{"target": "x"}]}).model_dump()


def test_named_presets_make_one_edit_per_name_after_which_yours_follow() -> None:
    data = apply_preset({"edits": [{"target": "thomas kinkade", "anchor": "art"}], "preserve": ["a tree"]},
                        "artists", {"names": ["van gogh", "Claude Monet"]})
    spec = ErasureSpec.model_validate(data)
    assert [(e.target, e.anchor) for e in spec.edits] == [("van gogh", "art"), ("Claude Monet", "art"),
                                                          ("thomas kinkade", "art")]
    assert "van gogh" not in spec.preserve and "claude monet" not in spec.preserve  # named ones are erased
    assert "pablo picasso" in spec.preserve and spec.preserve[-1] == "a tree"
    assert spec.preset.params == {"names": ["van gogh", "Claude Monet"]}
    brands = expand_preset("brands", {"names": ["acme cola"], "anchor": "a soda"})
    assert brands["edits"] == [{"target": "acme cola", "anchor": "a soda"}]
    assert "an advertisement for acme cola" in brands["eval_prompts"]
    assert eval_prompts(brands["preset"]) == brands["eval_prompts"]
    # your templates replace the preset's
    own = apply_preset({"templates": ["{}", "a sticker of {}"]}, "characters", {"names": ["mickey"]})
    assert own["templates"] == ["{}", "a sticker of {}"]


@pytest.mark.parametrize(("name", "params", "field", "words"), [
    ("nudes", None, "preset", "not a preset"),
    ("artists", None, "names", "pass at least one"),
    ("artists", {"names": []}, "names", "at least 1"),
    ("nudity", {"names": ["x"]}, "names", "takes no names"),
    ("nudity", {"anchor": "x"}, "anchor", "takes no anchor"),
    ("brands", {"names": ["a", "A"]}, "names", "appears twice"),
    ("brands", {"names": ["x" * 65]}, "names", "64 characters"),
    ("brands", {"names": [f"n{i}" for i in range(MAX_PRESET_NAMES + 1)]}, "names", f"at most {MAX_PRESET_NAMES}"),
    ("brands", {"names": ["a\u202eb"]}, "names", "invisible"),
    ("brands", {"names": ["x"], "colour": "red"}, "colour", "Extra inputs"),
    ("characters", {"names": ["a person"]}, "anchor", "also one of the names"),
])
def test_a_bad_preset_or_parameter_is_refused_naming_it(name, params, field, words) -> None:
    with pytest.raises(PresetError) as exc:
        expand_preset(name, params)
    assert exc.value.field == field and words in str(exc.value), str(exc.value)


def test_cli_preset(tmp_path, capsys) -> None:
    assert main(["presets", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {p["name"] for p in listed} == set(PRESETS)
    out = str(tmp_path / "x.safetensors")
    assert main(["erase", "--preset", "nudes", "--out", out]) == 2
    assert "--preset: 'nudes' is not a preset" in capsys.readouterr().err
    assert main(["erase", "--preset", "artists", "--out", out]) == 2
    assert "--name: preset 'artists' erases the names you give" in capsys.readouterr().err
    assert main(["erase", "--name", "x", "--out", out]) == 2
    assert "need a --preset" in capsys.readouterr().err


def test_a_presets_delta_and_model_card_name_the_preset() -> None:
    from erasepro_core import erase
    from erasepro_core.card import model_card
    from erasepro_core.tiny import tiny_sd_pipeline

    result = erase(tiny_sd_pipeline(seed=0), apply_preset({}, "brands", {"names": ["acme cola"]}))
    assert result.delta.spec["preset"] == {"name": "brands", "version": 1, "params": {"names": ["acme cola"]}}
    card = model_card(result.delta, "lora")
    assert '- preset: `brands` version 1 (erasepro_core/presets), parameters `{"names": ["acme cola"]}`' in card


def test_a_preset_chooses_erasepro_settings_unless_the_request_does() -> None:
    """characters constrains names through EOS (canvas: a last-token edit left a character visible)."""
    from erasepro_core.presets import apply_preset
    from erasepro_core.spec import ErasureSpec

    spec = ErasureSpec.model_validate(apply_preset({}, "characters", {"names": ["Mickey"]}))
    assert spec.method.token_policy == "to_eos"
    mine = ErasureSpec.model_validate(apply_preset({"token_policy": "last"}, "characters", {"names": ["Mickey"]}))
    assert mine.method.token_policy == "last"
    uce = ErasureSpec.model_validate(apply_preset({"method": "uce"}, "characters", {"names": ["Mickey"]}))
    assert uce.method.name == "uce"
    assert ErasureSpec.model_validate(apply_preset({}, "artists", {"names": ["X"]})).method.token_policy == "last"
