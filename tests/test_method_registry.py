"""A third method is one module (tests/toy_method.py) plus one ``register`` line: the spec, the CLI, the erase
itself, the REST request and the console's form (built from the OpenAPI schema) all accept it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from toy_method import ToyConfig

from erasepro_core.cli import CLIError, build_parser, build_spec
from erasepro_core.methods import METHODS, register
from erasepro_core.spec import ErasureSpec, wire_errors

CAT = [{"target": "cat", "anchor": "dog"}]
HERE = Path(__file__).parent


@pytest.fixture
def toy() -> Iterator[None]:
    register(ToyConfig, "toy_method")  # the one line a new method needs
    try:
        yield
    finally:
        del METHODS["toy"]


def test_spec_accepts_the_toy_method_in_flat_and_nested_form(toy: None) -> None:
    spec = ErasureSpec.model_validate({"edits": CAT, "method": "toy", "toy_strength": 0.5, "toy_note": "fancy"})
    assert isinstance(spec.method, ToyConfig) and spec.method.strength == 0.5
    wire = spec.model_dump(mode="json")
    assert wire["method"] == "toy" and wire["toy_strength"] == 0.5 and wire["toy_note"] == "fancy"
    assert ErasureSpec.model_validate(wire) == spec  # the wire form round-trips
    assert ErasureSpec.model_validate({"edits": CAT, "method": {"name": "toy", "strength": 0.5,
                                                                "note": "fancy"}}) == spec


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"toy_strength": 0}, "toy_strength", "greater than 0"),
    ({"toy_note": "loud"}, "toy_note", "'plain'"),
    ({"ridge": 0.1}, "ridge", "not a setting of method 'toy'"),
])
def test_spec_errors_name_the_toy_setting(toy: None, data: dict, field: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        ErasureSpec.model_validate({"edits": CAT, "method": "toy", **data})
    err = wire_errors(info.value)[0]
    assert ".".join(map(str, err["loc"])) == field and message in err["msg"], err


def test_toy_settings_are_refused_on_another_method(toy: None) -> None:
    with pytest.raises(ValidationError, match="not a setting of method 'erasepro'"):
        ErasureSpec.model_validate({"edits": CAT, "toy_strength": 2.0})


def test_cli_has_flags_from_the_toy_config(toy: None) -> None:
    args = build_parser().parse_args(["erase", "--model", "m", "--out", "d.safetensors", "--target", "cat",
                                      "--method", "toy", "--toy-strength", "2.5", "--toy-note", "fancy"])
    spec = build_spec(args)
    assert spec.method == ToyConfig(strength=2.5, note="fancy")
    with pytest.raises(SystemExit):  # a Literal setting's flag takes only its choices
        build_parser().parse_args(["erase", "--model", "m", "--out", "d", "--target", "cat", "--toy-note", "x"])
    bad = build_parser().parse_args(["erase", "--model", "m", "--out", "d", "--target", "cat", "--method", "toy",
                                     "--toy-strength", "20"])
    with pytest.raises(CLIError, match="toy_strength: .*less than or equal to 10"):
        build_spec(bad)


def test_erase_runs_the_toy_method(toy: None, sd_pipe) -> None:
    from erasepro_core.erasure import erase

    result = erase(sd_pipe, {"edits": CAT, "method": "toy", "default_preserve": False})
    assert result.report["method"] == "toy"
    assert result.report["summary"]["kv_residual"] < 1e-3  # s = 1: the targets map onto the anchors
    assert result.delta.spec["toy_strength"] == 1.0


def test_rest_request_and_console_form_accept_the_toy_method() -> None:
    """The REST models are built when ``app`` is imported, so a method registers before: a fresh process."""
    script = """
import json
from pathlib import Path
from toy_method import ToyConfig
from erasepro_core.methods import register
register(ToyConfig, "toy_method")
from app.main import create_app
from app.schemas import ErasureRequest
from erasepro_jobs.settings import Settings
doc = create_app(Settings(data_dir=Path("/nonexistent"))).openapi()
spec = ErasureRequest.model_validate({"base_model": "bundled", "edits": [{"target": "cat"}], "method": "toy",
                                      "options": {"toy_strength": 3.0}}).to_spec()
schemas = doc["components"]["schemas"]
print(json.dumps({"method": schemas["ErasureRequest"]["properties"]["method"],
                  "options": schemas["ErasureOptions"]["properties"], "spec": spec.model_dump(mode="json")}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "toy" in got["method"]["enum"]
    # The console's new-erasure form shows an option under the method its schema names (x-method).
    assert got["options"]["toy_strength"]["x-method"] == got["options"]["toy_note"]["x-method"] == "toy"
    assert got["options"]["ridge"]["x-method"] == "erasepro" and "x-method" not in got["options"]["templates"]
    strength = got["options"]["toy_strength"]
    assert strength["exclusiveMinimum"] == 0 and strength["maximum"] == 10 and "Toy: the scale" in \
        strength["description"]
    assert got["options"]["toy_note"]["enum"] == ["plain", "fancy"]
    assert got["spec"]["method"] == "toy" and got["spec"]["toy_strength"] == 3.0
