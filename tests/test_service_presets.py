"""Presets and image judges through the real stack (`erasepro serve`: embedded Redis, RQ worker, uvicorn):
``GET /v1/presets`` documents them, ``POST /v1/erasures {"base_model": "bundled", "preset": "nudity"}`` runs and
its spec names the preset's edits and version, a bad preset name or parameter is a 422 naming it at the door, and
an evaluation with the NudeNet judge (the real detector) or a tiny random CLIP (``ERASEPRO_CLIP_MODEL``) runs
through the worker and reports the flagged rates before/after with their sample size, and each prompt's images."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import ServeProcess as Served  # noqa: E402
from service_fixtures import (  # noqa: E402
    serving,
    submit,
    wait_for,
    wait_status,
)

from erasepro_core.presets import MAX_PRESET_NAMES, PRESETS  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from erasepro_core.tiny import write_tiny_clip

    tmp = tmp_path_factory.mktemp("presets")
    write_tiny_clip(tmp / "clip")
    yield from serving(tmp, {"ERASEPRO_BUNDLED": "1", "ERASEPRO_CLIP_MODEL": str(tmp / "clip")})


def test_presets_are_listed_and_documented(served: Served) -> None:
    with served.client() as c:
        r = c.get("/v1/presets")
        assert r.status_code == 200, r.text
        items = {p["name"]: p for p in r.json()["items"]}
        assert set(items) == set(PRESETS)
        assert items["nudity"]["params"] == {"names": "not accepted", "anchor": "not accepted"}
        assert items["artists"]["params"] == {"names": "required", "anchor": "art"}
        assert all(p["targets"] and p["preserves"] and p["version"] >= 1 for p in items.values())
        doc = c.get("/openapi.json").json()
        assert "/v1/presets" in doc["paths"] and "PresetView" in doc["components"]["schemas"]
        req = doc["components"]["schemas"]["ErasureRequest"]["properties"]
        assert "preset" in req and "preset_params" in req
        assert httpx.get(f"http://127.0.0.1:{served.port}/v1/presets").status_code == 401  # like every /v1 route


def test_nudity_preset_on_the_bundled_model_runs_and_its_spec_names_the_preset(served: Served) -> None:
    with served.client() as c:
        job = submit(c, {"base_model": "bundled", "preset": "nudity"})
        view = wait_status(c, job)
        assert view["status"] == "succeeded", (view, served.log())
        spec = view["spec"]
        assert spec["preset"] == {"name": "nudity", "version": PRESETS["nudity"].version, "params": {}}
        assert [e["target"] for e in spec["edits"]] == [e.target for e in PRESETS["nudity"].edits]
        assert spec["templates"] == PRESETS["nudity"].templates
        report = view["report"]
        if report["n_constraints"] < 0.25 * report["context_width"]:  # exact below a quarter of the width
            assert report["summary"]["max_residual"] < 1e-3
        else:  # the nudity preset's many phrasings pass it on the bundled model: the soft residual, reported
            assert 0 < report["summary"]["kv_residual"] < 1
        assert c.get(f"/v1/erasures/{job}/checkpoint").status_code == 200
        assert c.delete(f"/v1/erasures/{job}").status_code == 204


def test_a_preset_combines_with_your_edits(served: Served) -> None:
    with served.client() as c:
        body = {"base_model": "tiny", "preset": "artists", "preset_params": {"names": ["van gogh"]},
                "edits": [{"target": "a cat", "anchor": "a dog"}], "preserve": ["a bird"]}
        job = submit(c, body)
        view = wait_status(c, job)
        assert view["status"] == "succeeded", (view, served.log())
        assert [(e["target"], e["anchor"]) for e in view["spec"]["edits"]] == [("van gogh", "art"), ("a cat", "a dog")]
        assert view["spec"]["preserve"][-1] == "a bird"
        assert view["spec"]["preset"]["params"] == {"names": ["van gogh"]}
        assert c.delete(f"/v1/erasures/{job}").status_code == 204


@pytest.mark.parametrize(("body", "loc", "words"), [
    ({"preset": "nudes"}, ["body", "preset"], "artists"),
    ({"preset": "artists"}, ["body", "preset_params", "names"], "pass at least one"),
    ({"preset": "nudity", "preset_params": {"names": ["x"]}}, ["body", "preset_params", "names"], "takes no names"),
    ({"preset": "brands", "preset_params": {"names": [f"b{i}" for i in range(MAX_PRESET_NAMES + 1)]}},
     ["body", "preset_params", "names"], f"at most {MAX_PRESET_NAMES}"),
    ({"preset": "brands", "preset_params": {"names": ["x" * 65]}}, ["body", "preset_params", "names", 0], "64"),
    ({"preset_params": {"names": ["x"]}, "edits": [{"target": "a"}]}, ["body", "preset_params"], "needs a preset"),
    ({}, ["body", "edits"], "or a preset"),
    ({"preset": "artists", "preset_params": {"names": ["a cat"]}, "edits": [{"target": "a cat"}]},
     ["body", "edits"], "appears twice"),
])
def test_bad_preset_input_is_a_422_naming_it(served: Served, body: dict, loc: list, words: str) -> None:
    with served.client() as c:
        r = c.post("/v1/erasures", json={"base_model": "tiny", **body})
        assert r.status_code == 422, r.text
        detail = r.json()["errors"]
        assert any(d["loc"] == loc and words in d["msg"] for d in detail), detail


def _evaluate(c: httpx.Client, job: str, body: dict, served: Served) -> dict:
    r = c.post(f"/v1/erasures/{job}/evaluations", json=body)
    assert r.status_code == 202, r.text
    url = r.headers["location"]

    def done() -> dict | None:
        view = c.get(url).json()
        return view if view["status"] in ("succeeded", "failed", "cancelled") else None

    view = wait_for(done, "the evaluation to finish", every=0.2)
    assert view["status"] == "succeeded", (view, served.log())
    return view


def test_nudenet_evaluation_runs_through_the_worker_and_reports_detector_rates(served: Served) -> None:
    with served.client() as c:
        job = submit(c, {"base_model": "tiny", "preset": "nudity"})
        assert wait_status(c, job)["status"] == "succeeded", served.log()
        for bad, loc, words in [
            ({"budgets": {"vocabulary": 4}}, "base_model", "ships no judge for attacks"),
            ({"judge": "nudenet", "budgets": {"vocabulary": 4}}, "budgets", "shapes judge only"),
            ({"judge": "shapes"}, "budgets", "give their budgets"),
            ({"judge": "nudes"}, "judge", "nudenet"),
            ({"samples": 9}, "samples", "less than or equal to 8"),
            ({"max_prompts": 65}, "max_prompts", "less than or equal to 64"),
        ]:
            r = c.post(f"/v1/erasures/{job}/evaluations", json=bad)
            assert r.status_code == 422, (bad, r.text)
            assert any(d["loc"][:2] == ["body", loc] and words in d["msg"] for d in r.json()["errors"]), r.text
        view = _evaluate(c, job, {"steps": 2, "samples": 2, "max_prompts": 3, "seed": 1}, served)
        assert view["judge"] == "nudenet" and view["samples"] == 2
        report = view["report"]
        assert report["judge"]["name"] == "nudenet" and report["judge"]["threshold"] == 0.6
        assert report["prompts"] == 3 and report["samples_per_prompt"] == 2 and report["images_per_side"] == 6
        for side in ("before", "after"):
            assert report[side]["n"] == 6 and 0.0 <= report[side]["rate"] <= 1.0 and len(report[side]["ci95"]) == 2
            assert view[side] == report[side]
        row = report["per_prompt"][0]
        assert row["prompt"] == PRESETS["nudity"].eval_prompts[0] and len(row["after"]["verdicts"]) == 2
        png = c.get(row["images"]["after"][1])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
        assert c.get(row["images"]["after"][1].replace("after-1", "after-7")).status_code == 404
        assert c.get(row["images"]["after"][1].replace("p00-after-1.png", "..%2Fmanifest.json")).status_code == 404
        brief = c.get(f"/v1/erasures/{job}").json()["evaluations"]
        assert brief[-1]["judge"] == "nudenet" and brief[-1]["after"] == report["after"]
        assert brief[-1]["judge_settings"] == report["judge"] and brief[-1]["samples_per_prompt"] == 2
        assert c.delete(f"/v1/erasures/{job}").status_code == 204
        assert c.get(row["images"]["after"][1]).status_code == 404


def test_clip_evaluation_of_an_artists_erasure_reads_the_configured_folder(served: Served) -> None:
    with served.client() as c:
        job = submit(c, {"base_model": "tiny", "preset": "artists", "preset_params": {"names": ["van gogh"]}})
        assert wait_status(c, job)["status"] == "succeeded", served.log()
        view = _evaluate(c, job, {"steps": 2, "samples": 1, "max_prompts": 2}, served)
        assert view["judge"] == "clip" and view["report"]["judge"]["model"] == "clip"
        assert [r["target"] for r in view["report"]["per_prompt"]] == ["van gogh", "van gogh"]
        assert view["report"]["before"]["n"] == 2
        assert c.delete(f"/v1/erasures/{job}").status_code == 204
