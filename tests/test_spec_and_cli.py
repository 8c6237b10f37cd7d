"""Bad input gives a clear error naming the field; the CLI exits non-zero with one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from erasepro_core.spec import ErasureSpec


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"edits": []}, "edits", "at least 1"),
        ({"edits": [{"target": "  "}]}, "edits.0.target", "non-empty"),
        ({"edits": [{"target": "cat", "anchor": "Cat"}]}, "edits.0", "differ"),
        ({"edits": [{"target": "cat"}, {"target": "cat", "anchor": "dog"}]}, "", "appears twice"),
        ({"edits": [{"target": "cat", "anchor": "dog"}, {"target": "dog"}]}, "", "is itself a target"),
        ({"edits": [{"target": "cat"}], "templates": ["a photo"]}, "templates", "exactly once"),
        ({"edits": [{"target": "cat"}], "templates": []}, "templates", "at least 1"),
        ({"edits": [{"target": "cat"}], "method": "magic"}, "method", "'erasepro' or 'uce'"),
        ({"edits": [{"target": "cat"}], "schedule": "back"}, "schedule", "'uniform'"),
        ({"edits": [{"target": "cat"}], "token_policy": "all"}, "token_policy", "'last'"),
        ({"edits": [{"target": "cat"}], "ridge": 0}, "ridge", "greater than 0"),
        ({"edits": [{"target": "cat"}], "layers": [1, 1]}, "layers", "repeat"),
        ({"edits": [{"target": "x" * 301}]}, "edits.0.target", "at most 300"),
        ({"edits": [{"target": "cat"}], "colour": "red"}, "colour", "Extra inputs"),
        ({"edits": [{"target": "cat"}], "layers": [0]}, "", "only the progressive stage"),
    ],
)
def test_spec_errors_name_the_field(data, field, message):
    with pytest.raises(ValidationError) as info:
        ErasureSpec.model_validate(data)
    err = info.value.errors()[0]
    assert ".".join(str(p) for p in err["loc"]) == field
    assert message in err["msg"]


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
        (["erase", "--target", "cat", "--template", "no braces"], "templates: template 'no braces'"),
        (["erase", "--target", "cat", "--spec", "/nonexistent.json"], "--spec: no such file"),
        (["erase", "--target", "cat", "--layers", "0,99", "--schedule", "front"], "layers: 99 is out of range"),
        (["erase", "--target", "cat", "--layers", "0"], "layers: only the progressive stage uses them"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, model_dir, args, needle):
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
