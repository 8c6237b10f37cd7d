"""A new attack is one function plus one ``register`` line carrying its budget range: the evaluation body runs
it and the REST request accepts its budgets in that range (and only there), with no list kept elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from erasepro_core.attacks import ATTACKS, Attack, budgets, register

HERE = Path(__file__).parent
TOY = Attack("toy", "toy_attack:toy_attack", (2, 7), "toy units")


@pytest.fixture
def toy() -> Iterator[None]:
    register(TOY)  # the one line a new attack needs
    try:
        yield
    finally:
        del ATTACKS["toy"]


def test_budget_ranges_come_from_the_registrations(toy: None) -> None:
    assert budgets()["toy"] == (2, 7)
    assert budgets() == {name: a.budget for name, a in ATTACKS.items()}
    assert budgets()["vocabulary"] == (1, 2000) and budgets()["soft_token"] == (0, 200)  # unchanged numbers


def test_a_bad_range_is_refused() -> None:
    with pytest.raises(ValueError, match="budget range"):
        register(Attack("bad", "toy_attack:toy_attack", (5, 2), "units"))
    assert "bad" not in ATTACKS


def test_the_request_validator_reads_the_registry(toy: None) -> None:
    from pydantic import ValidationError

    from app.routers.evaluations import EvaluationRequest

    assert EvaluationRequest.model_validate({"budgets": {"toy": 7}}).budgets == {"toy": 7}
    for bad, message in ((8, "toy: budget must be in 2..7"), (1, "toy: budget must be in 2..7")):
        with pytest.raises(ValidationError, match=message):
            EvaluationRequest.model_validate({"budgets": {"toy": bad}})
    del ATTACKS["toy"]
    try:
        with pytest.raises(ValidationError, match="unknown attack 'toy'"):
            EvaluationRequest.model_validate({"budgets": {"toy": 3}})
    finally:
        register(TOY)


def test_evaluate_robustness_runs_a_registered_attack(toy: None, sd_pipe) -> None:
    from erasepro_core.attacks import evaluate_robustness
    from erasepro_core.erasure import erase

    delta = erase(sd_pipe, {"edits": [{"target": "cat", "anchor": "dog"}], "default_preserve": False}).delta
    out = evaluate_robustness(sd_pipe, delta, ["cat"], lambda t: None, lambda t: ["a photo of {}"], {"toy": 4})
    assert out["asr"] == {"toy": 0.4}
    assert out["attacks"]["cat"]["toy"]["details"] == {"changed": True}


def test_rest_schema_and_request_take_the_new_attack_without_torch() -> None:
    """The REST models are built when ``app`` is imported, so an attack registers before: a fresh process, which
    also shows that the registry, the jobs package and the router import no torch."""
    script = """
import json, sys
from pathlib import Path
from erasepro_core.attacks import Attack, register
register(Attack("toy", "toy_attack:toy_attack", (2, 7), "toy units"))
from app.main import create_app
from app.routers.evaluations import EvaluationRequest
from erasepro_jobs.settings import Settings
import erasepro_jobs.evaluations
doc = create_app(Settings(data_dir=Path("/nonexistent"))).openapi()
budgets = doc["components"]["schemas"]["EvaluationRequest"]["properties"]["budgets"]
everything = {name: 1 for name in ("vocabulary", "word_search", "concept_direction", "closed_form")}
every = EvaluationRequest.model_validate({"budgets": {**everything, "soft_token": 0, "toy": 2}}).budgets
print(json.dumps({"budgets": budgets, "every": every, "torch": "torch" in sys.modules}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert not got["torch"]
    schema = got["budgets"]["anyOf"][0]
    assert schema["maxProperties"] == 6 and "'toy': (2, 7)" in got["budgets"]["description"]
    assert got["every"]["toy"] == 2 and len(got["every"]) == 6  # all six attacks at once fit the bound
