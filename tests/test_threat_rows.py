"""The threat-model evaluation's rows and summary (erasepro_core/robust/threat.py), the torch-free copies of its
names the API validates against (erasepro_jobs/evaluations.py) and what every method says it defends against.
No model is loaded: the end-to-end run is tests/test_service_evaluations_threat.py."""

from __future__ import annotations

import numpy as np
import pytest

from erasepro_core.judges.base import wilson
from erasepro_core.robust.threat import defences, kind_of, paired, rate, rate_row, summarise, t1_row
from erasepro_jobs import evaluations as ev


def test_rate_is_k_of_n_with_the_wilson_interval() -> None:
    r = rate([True, False, False, True] + [False] * 12)
    lo, hi = wilson(2, 16)
    assert (r["rate"], r["k"], r["n"]) == (0.125, 2, 16)
    assert r["ci95"] == [round(lo, 4), round(hi, 4)] and 0.03 < lo < 0.04 and 0.35 < hi < 0.37
    assert rate([]) == {"rate": None, "k": 0, "n": 0, "ci95": [0.0, 1.0]}
    assert rate(np.ones(5, bool))["ci95"][1] == 1.0


def test_a_row_names_its_threat_model_target_and_attack() -> None:
    row = rate_row("T2", "jasper quintrell", "style", "closed_form", [True, False, False], budget=2)
    assert row == {"threat_model": "T2", "target": "jasper quintrell", "kind": "style", "attack": "closed_form",
                   "rate": 0.3333, "k": 1, "n": 3, "ci95": row["ci95"], "budget": 2}
    with pytest.raises(ValueError, match="threat_model"):
        rate_row("T3", "x", "style", "closed_form", [True])


def test_t1_row_pairs_with_the_unedited_model_and_the_guard() -> None:
    seen = np.array([1, 1, 0, 1, 0, 0], bool)
    base = np.array([1, 1, 1, 1, 1, 0], bool)
    flagged = np.array([1, 0, 0, 1, 0, 0], bool)
    row = t1_row("auntie bellyweather", "character", "misspelling", seen, unedited=base, flagged=flagged,
                 refuses=True, examples=["a", "b", "c", "d"])
    assert row["threat_model"] == "T1" and row["attack"] == "misspelling" and (row["k"], row["n"]) == (3, 6)
    assert (row["unedited"]["k"], row["unedited"]["n"]) == (5, 6)
    assert row["vs_unedited"]["diff"] == round(3 / 6 - 5 / 6, 4)
    lo, hi = row["vs_unedited"]["ci95"]
    assert lo <= row["vs_unedited"]["diff"] <= hi <= 0
    assert row["guard"]["k"] == 2 and row["through_guard"]["k"] == 1  # seen and not refused: prompt 2 only
    assert row["examples"] == ["a", "b", "c"]
    logged = t1_row("auntie bellyweather", "character", "misspelling", seen, flagged=flagged, refuses=False)
    assert logged["through_guard"]["k"] == 3 and "unedited" not in logged  # a logging guard refuses nothing


def test_paired_difference_of_identical_outcomes_is_zero() -> None:
    assert paired([1, 0, 1], [1, 0, 1]) == {"diff": 0.0, "ci95": [0.0, 0.0]}
    assert paired([], []) == {"diff": None, "ci95": [None, None]}


def test_summary_pools_t1_and_sums_t2_over_targets() -> None:
    rows = [rate_row("T2", "a", "style", "soft_token", [True, False, False]),
            rate_row("T2", "b", "style", "soft_token", [True, True, False]),
            rate_row("T2", "a", "style", "closed_form", [False] * 3)]
    s = summarise(rows, {"edited": [np.array([1, 0], bool), np.array([1, 1, 0], bool)],
                         "unedited": [np.array([1, 1], bool), np.array([1, 1, 1], bool)]})
    assert (s["T1"]["pooled"]["k"], s["T1"]["pooled"]["n"]) == (3, 5)
    assert (s["T1"]["unedited"]["k"], s["T1"]["vs_unedited"]["diff"]) == (5, -0.4)
    assert (s["T2"]["soft_token"]["k"], s["T2"]["soft_token"]["n"]) == (3, 6)
    assert s["T2"]["closed_form"]["rate"] == 0.0
    assert summarise([], {"edited": [], "unedited": []}) == {}


def test_the_threat_names_are_the_cores_and_name_registered_attacks() -> None:
    """The REST front end validates with the names the core reports under (one torch-free module: that the front
    end stays torch-free is test_service_api's test_app_never_imports_torch), and the T2 names and default budgets
    are attacks of the registry, inside their ranges."""
    from app.routers import evaluations as router
    from erasepro_core.attacks import ATTACKS, budgets
    from erasepro_core.robust import t1

    assert (router.T1_CATEGORIES, router.T2_ATTACKS) == (t1.T1_CATEGORIES, t1.T2_ATTACKS)
    assert set(t1.T2_ATTACKS) <= set(ATTACKS) and set(ev.T2_BUDGETS) == set(t1.T2_ATTACKS)
    for name, budget in ev.T2_BUDGETS.items():
        lo, hi = budgets()[name]
        assert lo <= budget <= hi


def test_kinds_and_the_door_check() -> None:
    assert kind_of("jasper quintrell") == "style" and kind_of("auntie bellyweather") == "character"
    with pytest.raises(ValueError, match="neither"):
        kind_of("circle")
    assert ev.threat_problem("canvas", ["jasper quintrell", "auntie bellyweather"]) is None
    assert "circle" in ev.threat_problem("canvas", ["circle"])
    assert "canvas" in ev.threat_problem("bundled", ["circle"])


def test_every_method_states_what_it_defends_against() -> None:
    from erasepro_core.methods import METHODS

    for name, method in METHODS.items():
        said = method.config.threat_models
        assert set(said) == {"T1", "T2"} and all(len(v) > 10 for v in said.values()), name
    out = defences({"method": "erasepro", "prompt_guard": "refuse"})
    assert [d["what"] for d in out] == ["method erasepro", "prompt guard (refuse)"]
    assert out[0]["T2"].startswith("no") and "refuses" in out[1]["T1"] and out[1]["T2"].startswith("no")
    assert [d["what"] for d in defences({"method": "uce", "prompt_guard": "off"})] == ["method uce"]


def test_the_view_carries_the_threat_report() -> None:
    entry = {"id": "e1", "erasure_id": "x", "threat_models": ["T1"], "judge": "canvas",
             "threat": {"rows": [rate_row("T1", "a", "style", "pooled", [True])], "summary": {"T1": {}}}}
    view = ev.evaluation_view(None, entry)
    assert view["threat_models"] == ["T1"] and view["threat"]["rows"][0]["threat_model"] == "T1"
    assert view["judge"] == "canvas" and ev.summary_of(entry)["threat_summary"] == {"T1": {}}
    assert ev.evaluation_view({"id": "e2", "erasure_id": "x", "status": "queued"}, None)["threat"] is None


def test_every_erasure_report_says_what_its_method_defends_against() -> None:
    from erasepro_core import erase
    from erasepro_core.methods import EraseProConfig, UCEConfig
    from erasepro_core.tiny import tiny_sd_pipeline

    pipe = tiny_sd_pipeline(seed=0)
    for options, config in (({}, EraseProConfig), ({"method": "uce"}, UCEConfig)):
        report = erase(pipe, {"edits": [{"target": "a cat", "anchor": "a dog"}], **options}).report
        assert report["threat_models"] == config.threat_models
