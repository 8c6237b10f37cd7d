"""Attacks are real (each brings the target back from the unedited model at a small budget), deterministic
given a seed, bounded, and report progress. The robustness numbers themselves belong to
benchmarks/robustness.py, not to a test."""

from __future__ import annotations

import numpy as np
import pytest

from erasepro_core.shapes import bundled_judge_available, bundled_model_available

pytestmark = [
    pytest.mark.attacks,
    pytest.mark.skipif(not (bundled_model_available() and bundled_judge_available()),
                       reason="the bundled shapes model or judge is not in this checkout"),
]

TEMPLATES = [f"a {c} {{}}" for c in ("red", "green", "blue", "yellow", "purple")]
SMALL = {"vocabulary": 20, "word_search": 12, "soft_token": 4, "concept_direction": 2, "closed_form": 2}


@pytest.fixture(scope="module")
def shapes_pipe():
    from erasepro_core.pipeline import load_pipeline

    return load_pipeline("bundled", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def circle_judge():
    from erasepro_core.shapes.judge import attribute_judge

    return attribute_judge("circle")


def _run(name, pipe, judge, budget, seed=0, templates=TEMPLATES, **kw):
    from erasepro_core.attacks import ATTACKS, Sampling

    return ATTACKS[name](pipe, pipe, "circle", judge, budget, seed, templates=templates,
                         sampling=Sampling(steps=8), **kw)


@pytest.mark.parametrize("name", list(SMALL))
def test_each_attack_brings_the_target_back_from_the_unedited_model(name, shapes_pipe, circle_judge):
    events = []
    res = _run(name, shapes_pipe, circle_judge, SMALL[name], progress=lambda s, f: events.append(f))
    assert res.asr >= 0.9, res.summary()
    assert res.curve[-1][1] == res.asr and all(0.0 <= a <= 1.0 for _, a in res.curve)
    assert len(res.images) == len(res.scores) or name in {"concept_direction", "closed_form", "word_search"}
    assert res.images.dtype == np.uint8 and res.images.shape[-1] == 3
    assert events and events == sorted(events) and events[-1] == 1.0
    assert res.summary()["asr"] == round(res.asr, 4)


@pytest.mark.parametrize("name", ["vocabulary", "soft_token", "closed_form"])
def test_attacks_are_deterministic_given_a_seed(name, shapes_pipe, circle_judge):
    budget = {"vocabulary": 10, "soft_token": 2, "closed_form": 1}[name]
    few = TEMPLATES[:2]  # determinism needs no breadth
    a = _run(name, shapes_pipe, circle_judge, budget, seed=3, templates=few)
    b = _run(name, shapes_pipe, circle_judge, budget, seed=3, templates=few)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.scores, b.scores)
    c = _run(name, shapes_pipe, circle_judge, budget, seed=4, templates=few)
    assert not np.array_equal(a.images, c.images)  # the seed matters


def test_budgets_are_bounded(shapes_pipe, circle_judge):
    from erasepro_core.attacks import AttackBudgetError, Sampling
    from erasepro_core.attacks.sampling import MAX_IMAGES

    with pytest.raises(ValueError, match="budget"):
        _run("closed_form", shapes_pipe, circle_judge, 99)
    with pytest.raises(ValueError, match="budget"):
        _run("soft_token", shapes_pipe, circle_judge, 10**6)
    with pytest.raises(AttackBudgetError):
        _run("vocabulary", shapes_pipe, circle_judge, MAX_IMAGES + 1)
    # a wall-clock limit stops an attack early and says so
    from erasepro_core.attacks import vocabulary_probe

    res = vocabulary_probe(shapes_pipe, shapes_pipe, "circle", circle_judge, 200, 0, templates=TEMPLATES,
                           sampling=Sampling(steps=2, batch=8, max_seconds=0.0))
    assert res.details["stopped_early"] and res.queries < 200


def test_probe_words_hold_variants_and_vocabulary(shapes_pipe):
    from erasepro_core.attacks import probe_words

    words = probe_words(shapes_pipe.tokenizer, "circle", 40, 0)
    assert len(words) == len(set(words)) == 40 and "circle" not in words
    assert sum(w.replace(" ", "").lower().startswith("ci") or "ircl" in w.lower() for w in words[:10]) >= 3


def test_hardening_lowers_what_the_closed_form_attack_recovers(shapes_pipe, circle_judge):
    """circle→square on the bundled model: each hardening round lowers the share of circle's K/V the
    closed-form attack reproduces, and the RECE-style image attack does not get better (measured: 0.05 → 0.00
    of 20 images at 15 steps)."""
    import copy

    from erasepro_core.attacks import Sampling, closed_form
    from erasepro_core.delta import applied_delta
    from erasepro_core.erasure import erase
    from erasepro_core.shapes import SOLVER_TEMPLATES

    spec = {"edits": [{"target": "circle", "anchor": "square"}], "templates": list(SOLVER_TEMPLATES)}
    plain = erase(shapes_pipe, spec)
    hard = erase(shapes_pipe, {**spec, "harden_rounds": 3})
    leaks = [r["leak_mean"] for r in hard.report["hardening"]]
    assert all(b < a for a, b in zip(leaks, leaks[1:], strict=False)), leaks
    edited = copy.deepcopy(shapes_pipe)
    asr = []
    for res in (plain, hard):
        with applied_delta(edited, res.delta):
            asr.append(closed_form(edited, shapes_pipe, "circle", circle_judge, 2, 0, templates=TEMPLATES,
                                   per_template=2, sampling=Sampling(steps=8)).asr)
    assert asr[1] <= asr[0] <= 0.5, asr


def test_evaluate_robustness_of_a_delta(shapes_pipe, circle_judge):
    import torch

    from erasepro_core.attacks import Sampling, evaluate_robustness
    from erasepro_core.erasure import erase
    from erasepro_core.shapes import SOLVER_TEMPLATES

    delta = erase(shapes_pipe, {"edits": [{"target": "circle", "anchor": "square"}],
                                "templates": list(SOLVER_TEMPLATES)}).delta
    before = [p.detach().clone() for p in shapes_pipe.unet.parameters()]
    events = []
    out = evaluate_robustness(shapes_pipe, delta, ["circle"], lambda t: circle_judge, lambda t: TEMPLATES,
                              {"vocabulary": 10}, sampling=Sampling(steps=6),
                              progress=lambda s, f: events.append(f))
    assert set(out["asr"]) == {"vocabulary"} and 0.0 <= out["asr"]["vocabulary"] <= 1.0
    assert out["attacks"]["circle"]["vocabulary"]["queries"] == 10 and events[-1] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, shapes_pipe.unet.parameters(), strict=True))
    with pytest.raises(ValueError, match="budgets"):
        evaluate_robustness(shapes_pipe, delta, ["circle"], lambda t: circle_judge, lambda t: TEMPLATES, {"x": 1})
