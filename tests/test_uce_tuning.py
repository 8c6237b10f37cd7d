"""The tuned-UCE sweep: every setting tried once, the best by the caller's validation score, ties to the first."""

from __future__ import annotations

from erasepro_core.methods.uce_tuning import SWEEP, UCE_ROWS, sweep_settings, tune_uce
from erasepro_core.spec import ErasureSpec


def _make(settings):
    return ErasureSpec.model_validate({"edits": [{"target": "cat", "anchor": "dog"}], "preserve": ["a tree"],
                                       **settings})


def test_sweep_covers_the_grid_on_each_protocol_and_builds_valid_specs():
    settings = sweep_settings()
    assert len(settings) == 2 * len(SWEEP["uce_lambda"]) * len(SWEEP["uce_preserve_scale"])
    specs = [_make(s) for s in settings]
    assert {s.method.protocol for s in specs} == {"uce2025", "uce2023"}
    assert all(s.default_preserve is False and s.templates == ["{}"] for s in specs)
    for row in UCE_ROWS.values():
        assert _make(row).method.name == "uce"


def test_tune_picks_the_best_validation_score_and_reports_every_try():
    seen = []

    def validate(spec):  # a made-up score peaked at λ = 2, s_p = 0.1 on uce2023
        m = spec.method
        seen.append(m)
        return -abs(m.lam - 2.0) - abs(m.preserve_scale - 0.1) + (0.5 if m.protocol == "uce2023" else 0.0)

    tuned = tune_uce(_make, validate)
    assert tuned.settings == {"method": "uce", "uce_protocol": "uce2023", "uce_lambda": 2.0,
                              "uce_preserve_scale": 0.1}
    assert len(seen) == len(tuned.tried) == 18 and tuned.score == max(s for _, s in tuned.tried)
    assert tuned.label() == "UCE tuned (uce2023, λ=2, s_p=0.1)"
    flat = tune_uce(_make, lambda spec: 1.0, protocols=("uce2025",))  # ties: the first setting tried
    assert flat.settings == sweep_settings(protocols=("uce2025",))[0]


def test_scores_equal_but_for_float_rounding_tie_to_the_first_setting():
    """2/12 - 1/12 and 3/12 - 2/12 differ in the last bit; the stated tie rule must still pick the earlier."""
    scores = iter([2 / 12 - 1 / 12, 0.0, 3 / 12 - 2 / 12])
    assert 2 / 12 - 1 / 12 < 3 / 12 - 2 / 12  # the float trap this guards against
    grid = {"uce_lambda": (0.5,), "uce_preserve_scale": (0.1, 1.0, 10.0)}
    tuned = tune_uce(_make, lambda spec: next(scores), grid=grid, protocols=("uce2025",))
    assert tuned.settings["uce_preserve_scale"] == 0.1
