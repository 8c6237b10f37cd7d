"""The threat-model evaluation through the real stack (`erasepro serve`: embedded Redis, RQ worker, API under
uvicorn): a canvas erasure of one style, with a refusing prompt guard, is evaluated under T1 and T2 with tiny
sample sizes and steps; its rows (each labelled with its threat model, with rate, n and a 95 % interval) land on
the evaluation, on the erasure and in the checkpoint's manifest. Bad input is a 422 naming the field, and a tight
``timeout_s`` ends the job with what it measured and why it stopped."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import SERVE_KEY, serving, submit, wait_for, wait_status  # noqa: E402
from service_fixtures import ServeProcess as Served  # noqa: E402

pytestmark = pytest.mark.attacks

STYLE = "jasper quintrell"  # a canvas artist (the robustness benchmarks' style at seed 0)
TINY = {"threat_models": ["T1", "T2"], "per_category": 2, "categories": ["canonical", "misspelling"],
        "budgets": {"soft_token": 1, "concept_direction": 1, "closed_form": 1}, "steps": 2, "seed": 1}
DEADLINE_S = 600.0  # a guard against hanging on a loaded machine, never a speed assertion


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serving(tmp_path_factory.mktemp("threat"), {"ERASEPRO_BUNDLED": "1",
                                                           "ERASEPRO_API_KEYS": f"acme:{SERVE_KEY}"})


def _client(served: Served):
    c = served.client()
    c.timeout = 300  # a loaded 2-core machine can keep the API waiting; a guard, never a speed assertion
    return c


def _erase(c, body: dict) -> str:
    job = submit(c, body)
    view = wait_status(c, job)
    assert view["status"] == "succeeded", view
    return job


@pytest.fixture(scope="module")
def canvas_erasure(served: Served) -> Iterator[str]:
    with _client(served) as c:
        job = _erase(c, {"base_model": "canvas", "edits": [{"target": STYLE, "anchor": ""}],
                         "options": {"prompt_guard": "refuse"}})
    yield job
    with _client(served) as c:
        c.delete(f"/v1/erasures/{job}")


def _finish(c, url: str) -> tuple[dict, set[str]]:
    stages: set[str] = set()

    def done() -> dict | None:
        view = c.get(url).json()
        stages.add(str(view["progress"]["stage"]))
        return view if view["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, "the evaluation to finish", deadline_s=DEADLINE_S, every=0.2), stages


def _interval_holds(r: dict) -> None:
    lo, hi = r["ci95"]
    assert r["n"] > 0 and r["rate"] == round(r["k"] / r["n"], 4) and 0 <= lo <= r["rate"] <= hi <= 1, r


def test_t1_and_t2_are_reported_apart_with_n_and_intervals(served: Served, canvas_erasure: str) -> None:
    with _client(served) as c:
        r = c.post(f"/v1/erasures/{canvas_erasure}/evaluations", json=TINY)
        assert r.status_code == 202, r.text
        ev = r.json()
        assert ev["threat_models"] == ["T1", "T2"] and ev["judge"] == "canvas" and ev["targets"] == [STYLE]
        view, stages = _finish(c, r.headers["location"])
        assert view["status"] == "succeeded", (view, served.log())
        assert view["progress"] == {"stage": "done", "fraction": 1.0}
        assert any(s.startswith(("T1 ", "T2 ")) for s in stages), stages  # progress named each unit

        threat = view["threat"]
        assert threat["truncated"] == [] and threat["settings"]["per_category"] == 2
        t1 = [row for row in threat["rows"] if row["threat_model"] == "T1"]
        t2 = [row for row in threat["rows"] if row["threat_model"] == "T2"]
        assert [row["attack"] for row in t1] == ["canonical", "misspelling", "pooled"]
        assert [row["attack"] for row in t2] == ["soft_token", "concept_direction", "closed_form"]
        for row in t1:
            _interval_holds(row)
            _interval_holds(row["unedited"])
            assert row["n"] == 2 and row["unedited"]["n"] == 2 and row["target"] == STYLE and row["kind"] == "style"
            d = row["vs_unedited"]
            assert d["ci95"][0] <= d["diff"] <= d["ci95"][1]
            # the erasure refuses what its guard flags: at the endpoint an attack succeeds only unflagged
            assert row["guard"]["n"] == 2 and row["through_guard"]["k"] <= row["k"]
        for row in t2:
            _interval_holds(row)
            assert row["n"] == 3 and row["budget"] == 1  # three templates x one seed each
        pooled = threat["summary"]["T1"]["pooled"]
        assert (pooled["n"], pooled["k"]) == (2, t1[-1]["k"])  # misspelling is the only attack category here
        assert set(threat["summary"]["T2"]) == set(TINY["budgets"])
        assert [d["what"] for d in threat["defences"]] == ["method erasepro", "prompt guard (refuse)"]

        brief = c.get(f"/v1/erasures/{canvas_erasure}").json()["evaluations"]
        assert brief[-1]["id"] == ev["id"] and brief[-1]["threat_summary"] == threat["summary"]
    manifest = json.loads((served.tmp / "data" / "tenants" / "acme" / "erasures" / canvas_erasure / "manifest.json")
                          .read_text())
    assert manifest["evaluations"][-1]["threat"]["rows"] == threat["rows"]


@pytest.mark.parametrize(("body", "field"), [
    ({"threat_models": ["T3"]}, "threat_models"),
    ({"threat_models": []}, "threat_models"),
    ({"threat_models": ["T1", "T1"]}, "threat_models"),
    ({"threat_models": ["T1"], "budgets": {"closed_form": 1}}, "budgets"),
    ({"threat_models": ["T2"], "budgets": {"vocabulary": 8}}, "budgets"),
    ({"threat_models": ["T2"], "budgets": {"closed_form": 99}}, "budgets"),
    ({"threat_models": ["T1"], "per_category": 0}, "per_category"),
    ({"threat_models": ["T1"], "per_category": 65}, "per_category"),
    ({"threat_models": ["T1"], "categories": ["rhyming"]}, "categories"),
    ({"threat_models": ["T2"], "categories": ["canonical"]}, "categories"),
    ({"threat_models": ["T1"], "judge": "clip"}, "judge"),
    ({"threat_models": ["T1"], "samples": 2}, "samples"),
    ({"threat_models": ["T1"], "targets": ["auntie bellyweather"]}, "targets"),
    ({"budgets": {"closed_form": 1}, "per_category": 4}, "per_category"),
])
def test_bad_input_is_422_naming_the_field(served: Served, canvas_erasure: str, body: dict, field: str) -> None:
    with _client(served) as c:
        r = c.post(f"/v1/erasures/{canvas_erasure}/evaluations", json=body)
    assert r.status_code == 422 and field in r.text, r.text


def test_other_worlds_and_unknown_concepts_are_422(served: Served) -> None:
    with _client(served) as c:
        shapes = _erase(c, {"base_model": "bundled", "edits": [{"target": "circle", "anchor": "square"}]})
        plain = _erase(c, {"base_model": "canvas", "edits": [{"target": "circle", "anchor": ""}]})
        try:
            r = c.post(f"/v1/erasures/{shapes}/evaluations", json={"threat_models": ["T1"]})
            assert r.status_code == 422 and "threat_models" in r.text and "canvas" in r.text, r.text
            r = c.post(f"/v1/erasures/{plain}/evaluations", json={"threat_models": ["T1"]})
            assert r.status_code == 422 and "targets" in r.text and "circle" in r.text, r.text
            # attacks at budgets on canvas go through threat_models: the answer says so
            r = c.post(f"/v1/erasures/{plain}/evaluations", json={"budgets": {"closed_form": 1}})
            assert r.status_code == 422 and "threat_models" in r.text, r.text
        finally:
            for job in (shapes, plain):
                c.delete(f"/v1/erasures/{job}")


def test_the_time_bound_cuts_the_job_short_and_says_where(served: Served, canvas_erasure: str) -> None:
    # far more than 10 s of work (6 categories x 64 prompts x 2 models), in chunks of 8 prompts at 2 steps each
    body = {"threat_models": ["T1"], "per_category": 64, "steps": 2, "timeout_s": 10}
    with _client(served) as c:
        r = c.post(f"/v1/erasures/{canvas_erasure}/evaluations", json=body)
        assert r.status_code == 202, r.text
        view, _ = _finish(c, r.headers["location"])
    assert view["status"] == "succeeded", (view["error"], served.log())
    threat = view["threat"]
    assert threat["truncated"] and "time bound" in threat["truncated"][0], threat["truncated"]
    done = [row for row in threat["rows"] if row["attack"] != "pooled"]
    assert done and all(8 <= row["n"] <= 64 and row["n"] % 8 == 0 for row in done)  # whole chunks
    assert len(done) < 6 or done[-1]["n"] < 64  # it stopped before the last category, or part-way through one
