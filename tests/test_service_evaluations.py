"""Evaluations of a finished erasure through the real stack (`erasepro serve`: embedded Redis, RQ worker, API).

A circle -> square erasure of the bundled shapes model is attacked with a tiny budget by a worker job; its
numbers appear on the evaluation, on the erasure and in the checkpoint's manifest on disk. Bad input is a 422 at
the door, a model without a judge a 422, an unfinished erasure a 409, another tenant a 404.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import (  # noqa: E402
    LONG_SPEC,
    SERVE_KEY,
    SHORT_SPEC,
    serving,
    submit,
    wait_for,
    wait_status,
)
from service_fixtures import ServeProcess as Served  # noqa: E402

pytestmark = pytest.mark.attacks

OTHER_KEY = "globex-eval-key-0123456789"
TINY_BUDGET = {"vocabulary": 8, "closed_form": 1}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {"ERASEPRO_BUNDLED": "1", "ERASEPRO_API_KEYS": f"acme:{SERVE_KEY},globex:{OTHER_KEY}"}
    yield from serving(tmp_path_factory.mktemp("evaluations"), env)


@pytest.fixture(scope="module")
def erased(served: Served) -> str:
    with served.client() as c:
        job = submit(c, {"base_model": "bundled", "edits": [{"target": "circle", "anchor": "square"}]})
        view = wait_status(c, job)
    assert view["status"] == "succeeded", (view, served.log())
    return job


def test_evaluation_runs_and_its_numbers_land_on_the_erasure(served: Served, erased: str) -> None:
    with served.client() as c, served.client(OTHER_KEY) as other:
        r = c.post(f"/v1/erasures/{erased}/evaluations", json={"budgets": TINY_BUDGET, "seed": 3, "steps": 6})
        assert r.status_code == 202, r.text
        ev = r.json()
        assert ev["status"] in ("queued", "running") and ev["targets"] == ["circle"] and ev["seed"] == 3
        url = f"/v1/erasures/{erased}/evaluations/{ev['id']}"
        assert r.headers["location"] == url
        # another tenant sees none of it
        assert other.get(url).status_code == 404
        assert other.get(f"/v1/erasures/{erased}/evaluations").status_code == 404
        assert other.post(f"/v1/erasures/{erased}/evaluations", json={"budgets": TINY_BUDGET}).status_code == 404

        def done() -> dict | None:
            view = c.get(url).json()
            return view if view["status"] in ("succeeded", "failed", "cancelled") else None

        view = wait_for(done, "the evaluation to finish", every=0.2)
        assert view["status"] == "succeeded", (view, served.log())
        assert set(view["asr"]) == set(TINY_BUDGET) and all(0.0 <= a <= 1.0 for a in view["asr"].values())
        assert set(view["efficacy"]["circle"]) == {"plain", "complex", "paraphrase", "heldout"}
        assert view["attacks"]["circle"]["vocabulary"]["budget"] == 8
        assert view["progress"] == {"stage": "done", "fraction": 1.0}

        erasure = c.get(f"/v1/erasures/{erased}").json()
        assert [e["id"] for e in erasure["evaluations"]] == [ev["id"]]
        assert erasure["evaluations"][0]["asr"] == view["asr"]
        assert [e["id"] for e in c.get(f"/v1/erasures/{erased}/evaluations").json()["items"]] == [ev["id"]]
        types = [e["type"] for e in c.get(f"/v1/erasures/{erased}/events").json()["items"]]
        assert "evaluation.created" in types and "evaluation.succeeded" in types

    # durable: the numbers are in the checkpoint's manifest, not only in Redis
    manifest = json.loads((served.tmp / "data" / "tenants" / "acme" / "erasures" / erased / "manifest.json")
                          .read_text())
    assert manifest["evaluations"][0]["asr"] == view["asr"]


@pytest.mark.parametrize("body", [
    {"budgets": {}},
    {"budgets": {"no_such_attack": 3}},
    {"budgets": {"vocabulary": 0}},
    {"budgets": {"soft_token": 10_000}},
    {"budgets": {"vocabulary": 8}, "seed": -1},
    {"budgets": {"vocabulary": 8}, "steps": 500},
    {"budgets": {"vocabulary": 8}, "targets": ["square"]},
    {"budgets": {"vocabulary": 8}, "surprise": 1},
])
def test_bad_input_is_422(served: Served, erased: str, body: dict) -> None:
    with served.client() as c:
        r = c.post(f"/v1/erasures/{erased}/evaluations", json=body)
    assert r.status_code == 422, r.text


def test_no_judge_is_422_and_unfinished_is_409_and_unknown_is_404(served: Served, erased: str) -> None:
    with served.client() as c:
        tiny = submit(c, SHORT_SPEC)
        assert wait_status(c, tiny)["status"] == "succeeded"
        r = c.post(f"/v1/erasures/{tiny}/evaluations", json={"budgets": TINY_BUDGET})
        assert r.status_code == 422 and "ships no judge" in r.text, r.text
        long = submit(c, LONG_SPEC)
        r = c.post(f"/v1/erasures/{long}/evaluations", json={"budgets": TINY_BUDGET})
        assert r.status_code == 409 and "only a succeeded erasure" in r.text, r.text
        c.post(f"/v1/erasures/{long}/cancel")
        assert c.get(f"/v1/erasures/{erased}/evaluations/{'0' * 32}").status_code == 404
        assert c.post(f"/v1/erasures/{erased}/evaluations/{'0' * 32}/cancel").status_code == 404
        assert c.post(f"/v1/erasures/{'0' * 32}/evaluations", json={"budgets": TINY_BUDGET}).status_code == 404


def test_an_evaluation_can_be_cancelled(served: Served, erased: str) -> None:
    with served.client() as c, served.client(OTHER_KEY) as other:
        r = c.post(f"/v1/erasures/{erased}/evaluations", json={"budgets": {"vocabulary": 2000}, "steps": 50})
        assert r.status_code == 202, r.text
        url = r.headers["location"]
        assert other.post(f"{url}/cancel").status_code == 404
        refused = c.delete(url)  # finished evaluations go with their erasure; cancelling is POST …/cancel
        assert refused.status_code == 405 and refused.headers["allow"].split(", ")[0] == "GET", refused.headers
        assert "DELETE" not in refused.headers["allow"]
        assert c.post(f"{url}/cancel").status_code == 202
        view = wait_for(lambda: (v := c.get(url).json())["status"] in ("cancelled", "failed", "succeeded") and v,
                        "the evaluation to stop", every=0.2)
        assert view["status"] == "cancelled", view
        again = c.post(f"{url}/cancel")
        assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json", again.text
        assert view["id"] not in [e["id"] for e in c.get(f"/v1/erasures/{erased}").json()["evaluations"]]
