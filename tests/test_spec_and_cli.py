"""Bad input gives a clear error naming the field; the CLI exits non-zero with one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from erasepro_core.methods import EraseProConfig, UCEConfig
from erasepro_core.spec import ErasureSpec, wire_errors

CAT = [{"target": "cat"}]


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"edits": []}, "edits", "at least 1"),
        ({"edits": [{"target": "  "}]}, "edits.0.target", "non-empty"),
        ({"edits": [{"target": "cat", "anchor": "Cat"}]}, "edits.0", "differ"),
        ({"edits": [{"target": "cat"}, {"target": "cat", "anchor": "dog"}]}, "edits", "appears twice"),
        ({"edits": [{"target": "cat", "anchor": "dog"}, {"target": "dog"}]}, "edits", "is itself a target"),
        ({"edits": CAT, "templates": ["a photo"]}, "templates.0", "exactly once"),
        ({"edits": CAT, "templates": []}, "templates", "at least 1"),
        ({"edits": CAT, "method": "magic"}, "method", "not a method"),
        ({"edits": CAT, "schedule": "back"}, "schedule", "'uniform'"),
        ({"edits": CAT, "token_policy": "all"}, "token_policy", "'last'"),
        ({"edits": CAT, "ridge": 0}, "ridge", "greater than or equal to"),
        ({"edits": CAT, "layers": [1, 1]}, "layers", "repeat"),
        ({"edits": [{"target": "x" * 301}]}, "edits.0.target", "at most 300"),
        ({"edits": CAT, "colour": "red"}, "colour", "Extra inputs"),
        ({"edits": CAT, "seed": 3}, "seed", "Extra inputs"),  # erasure is deterministic: no seed to set
        ({"edits": CAT, "layers": [0]}, "layers", "only the progressive stage"),
        # Templates: exactly one {} and no other format field or brace.
        ({"edits": CAT, "templates": ["{} {x}"]}, "templates.0", "besides"),
        ({"edits": CAT, "templates": ["{}", "{}}"]}, "templates.1", "besides"),
        ({"edits": CAT, "templates": ["{0}"]}, "templates.0", "exactly once"),
        ({"edits": CAT, "heldout_templates": ["{}{}"]}, "heldout_templates.0", "exactly once"),
        # Invisible characters: a prompt that looks like one concept and tokenises as another.
        ({"edits": [{"target": "c\x00at"}]}, "edits.0.target", "control character"),
        ({"edits": [{"target": "cat", "anchor": "d\u200bog"}]}, "edits.0.anchor", "ZERO WIDTH SPACE"),
        ({"edits": CAT, "preserve": ["ok", "a \u202edog"]}, "preserve.1", "RIGHT-TO-LEFT OVERRIDE"),
        ({"edits": CAT, "preserve": ["tab\there"]}, "preserve.0", "control character"),
        # Numbers that would break the solver.
        ({"edits": CAT, "ridge": 5e-324}, "ridge", "greater than or equal to"),
        ({"edits": CAT, "preserve_weight": float("inf")}, "preserve_weight", "finite"),
        ({"edits": CAT, "method": "uce", "uce_lambda": 0}, "uce_lambda", "greater than 0"),
        # Strict types: no bool as a number, no numeric strings, no float as an int.
        ({"edits": CAT, "ridge": "1e-2"}, "ridge", "valid number"),
        ({"edits": CAT, "preserve_weight": True}, "preserve_weight", "valid number"),
        ({"edits": CAT, "schedule": "front", "layers": [True]}, "layers.0", "valid integer"),
        ({"edits": CAT, "schedule": "front", "layers": [1.0]}, "layers.0", "valid integer"),
        ({"edits": CAT, "default_preserve": 1}, "default_preserve", "valid boolean"),
        ({"edits": CAT, "method": "uce", "uce_lambda": "0.5"}, "uce_lambda", "valid number"),
        # A setting of another method is named, not silently ignored.
        ({"edits": CAT, "method": "uce", "schedule": "front"}, "schedule", "not a setting of method 'uce'"),
        ({"edits": CAT, "uce_lambda": 0.1}, "uce_lambda", "not a setting of method 'erasepro'"),
    ],
)
def test_spec_errors_name_the_field(data, field, message):
    with pytest.raises(ValidationError) as info:
        ErasureSpec.model_validate(data)
    err = wire_errors(info.value)[0]
    assert ".".join(str(p) for p in err["loc"]) == field
    assert message in err["msg"]


def test_spec_method_is_a_config_and_the_wire_form_is_flat():
    spec = ErasureSpec.model_validate({"edits": CAT, "method": "uce", "uce_lambda": 0.25})
    assert isinstance(spec.method, UCEConfig) and spec.method.lam == 0.25
    wire = spec.model_dump(mode="json")
    assert wire["method"] == "uce" and wire["uce_lambda"] == 0.25 and "schedule" not in wire
    assert ErasureSpec.model_validate(wire) == spec
    assert ErasureSpec.model_validate_json(spec.model_dump_json()) == spec
    nested = ErasureSpec(edits=CAT, method=EraseProConfig(schedule="front", layers=[0]))
    assert ErasureSpec.model_validate(nested.model_dump()) == nested
    assert ErasureSpec(edits=CAT, schedule="front", layers=[0]) == nested
    assert ErasureSpec(edits=CAT, method={"name": "erasepro", "schedule": "front", "layers": [0]}) == nested
    with pytest.raises(ValidationError, match="either flat or inside"):
        ErasureSpec(edits=CAT, method={"name": "erasepro"}, schedule="front")


def test_importing_the_package_and_the_spec_does_not_import_torch():
    code = ("import sys, erasepro_core, erasepro_core.spec, erasepro_core.methods, erasepro_core.io; "
            "from erasepro_core import ErasureSpec; ErasureSpec(edits=[{'target': 'cat'}], method='uce'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_public_names_are_the_functions_not_modules():
    import erasepro_core

    for name in erasepro_core.__all__:
        assert not type(getattr(erasepro_core, name)).__name__ == "module", name
    assert callable(erasepro_core.erase) and callable(erasepro_core.apply_delta)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "erasepro_core.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, sd_pipe):
    from erasepro_core.pipeline import save_pipeline

    return save_pipeline(sd_pipe, tmp_path_factory.mktemp("m") / "tiny")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["erase", "--target", "cat", "--anchor", "cat"], "anchor must differ"),
        (["erase", "--target", "cat", "--anchor", "a", "--anchor", "b"], "--anchor: give one per --target"),
        (["erase", "--anchor", "dog"], "--anchor needs a --target"),
        (["erase", "--target", "cat", "--template", "no braces"], "templates.0: template 'no braces'"),
        (["erase", "--target", "cat", "--method", "uce", "--schedule", "front"], "schedule: not a setting of"),
        (["erase", "--target", "cat", "--spec", "/nonexistent.json"], "--spec: no such file"),
        (["erase", "--target", "cat", "--layers", "0,99", "--schedule", "front"], "layers: 99 is out of range"),
        (["erase", "--target", "cat", "--layers", "0"], "layers: only the progressive stage uses them"),
        (["erase", "--target", "cat", "--method", "uce", "--uce-token-span", "to_end"],
         "uce_token_span: protocol 'uce2025' uses 'last'"),
        (["erase", "--target", "cat", "--method", "uce", "--uce-protocol", "uce2023", "--uce-preserve-tokens", "last"],
         "uce_preserve_tokens: protocol 'uce2023' uses 'sequence'"),
        (["erase", "--target", "cat", "--method", "uce", "--uce-lambda", "0"], "uce_lambda: Input should be greater"),
        (["erase", "--target", "cat", "--uce-lambda", "1"], "uce_lambda: not a setting of method 'erasepro'"),
        (["erase", "--target", "cat", "--method", "uce", "--spec", "SPEC"], "default_preserve: UCE protocol 'uce2025'"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, model_dir, args, needle):
    (tmp_path / "spec.json").write_text('{"default_preserve": true}')
    args = [str(tmp_path / "spec.json") if a == "SPEC" else a for a in args]
    res = _cli(*args, "--model", str(model_dir), "--out", str(tmp_path / "d.safetensors"))
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("erasepro:")]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_cli_missing_model_folder(tmp_path):
    res = _cli("erase", "--model", str(tmp_path / "nope"), "--target", "cat", "--out", str(tmp_path / "d"))
    assert res.returncode == 2 and "not a diffusers pipeline folder" in res.stderr


def test_cli_erase_inspect_generate(tmp_path, model_dir):
    out = tmp_path / "d.safetensors"
    res = _cli("erase", "--model", str(model_dir), "--target", "van gogh", "--anchor", "art", "--out", str(out),
               "--report", str(tmp_path / "r.json"), "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert out.is_file() and (tmp_path / "r.json").is_file()
    res = _cli("inspect", str(out))
    assert res.returncode == 0 and "attn2.to_k" in res.stdout and "van gogh" in res.stdout
    res = _cli("generate", "--model", str(model_dir), "--delta", str(out), "--prompt", "van gogh", "--steps", "2",
               "--out", str(tmp_path / "g.png"), "--device", "cpu")
    assert res.returncode == 0, res.stderr
    from PIL import Image

    assert Image.open(tmp_path / "g.png").size == (32, 32)
    res = _cli("inspect", str(tmp_path / "g.png"))
    assert res.returncode == 2 and "erasepro: error:" in res.stderr


@pytest.mark.parametrize("protocol", [None, "uce2023"])
def test_cli_uce_writes_the_authors_default_edit(tmp_path, model_dir, sd_pipe, protocol):
    """``erasepro erase --method uce --target T --anchor A --preserve P…`` = the authors' script with its defaults
    (``--uce-protocol uce2023``: the paper-era one), checked against the re-derivations in uce_reference.py."""
    from uce_reference import edit_gap, uce2023, uce2025

    from erasepro_core.delta import Delta

    out = tmp_path / "uce.safetensors"
    extra = ["--uce-protocol", protocol] if protocol else []
    res = _cli("erase", "--model", str(model_dir), "--method", "uce", "--target", "van gogh", "--anchor", "art",
               "--target", "cat", "--anchor", "", "--preserve", "claude monet", "--preserve", "a tree", *extra,
               "--out", str(out), "--device", "cpu")
    assert res.returncode == 0, res.stderr
    delta = Delta.load(out)
    assert delta.spec["uce_protocol"] == (protocol or "uce2025") and delta.spec["default_preserve"] is False
    ref = uce2023 if protocol else uce2025
    want = ref(sd_pipe, ["van gogh", "cat"], ["art", ""], ["claude monet", "a tree"])
    gaps = edit_gap(delta.tensors, want, sd_pipe)
    assert len(gaps) == len(delta.tensors) and max(gaps.values()) < 1e-4, gaps


def test_only_errors_a_user_can_fix_exit_2():
    from erasepro_core.errors import USER_ERRORS

    assert issubclass(FileNotFoundError, USER_ERRORS) and issubclass(PermissionError, USER_ERRORS)
    assert not issubclass(OSError, USER_ERRORS)  # a disk or network fault is a bug report, with its traceback
    assert not issubclass(ConnectionError, USER_ERRORS) and not issubclass(TimeoutError, USER_ERRORS)


def test_cli_warmup_stores_statistics_once(tmp_path, model_dir):
    import os

    env = {**os.environ, "ERASEPRO_STATS_DIR": str(tmp_path / "stats")}
    args = [sys.executable, "-m", "erasepro_core.cli", "warmup", "--model", str(model_dir), "--device", "cpu"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0 and "computed fc2" in first.stdout and "ctx" in first.stdout, first.stderr
    second = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert second.returncode == 0 and "nothing (already stored)" in second.stdout, second.stdout
