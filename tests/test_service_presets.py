"""Presets through the real stack (`erasepro serve`: embedded Redis, RQ worker, uvicorn): ``GET /v1/presets``
documents them, ``POST /v1/erasures {"base_model": "bundled", "preset": "nudity"}`` runs and its spec names the
preset's edits and version, and a bad preset name or parameter is a 422 naming it at the door."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import SERVE_KEY, start_serve, submit, wait_for, wait_status  # noqa: E402

from app.embedded import free_port, stop_process  # noqa: E402
from erasepro_core.presets import MAX_PRESET_NAMES, PRESETS  # noqa: E402


class Served:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.start()

    def start(self) -> None:
        self.port = free_port()
        self.proc = start_serve(self.tmp, self.port, {"ERASEPRO_BUNDLED": "1"})
        wait_for(lambda: self.proc.poll() is not None or self.ready(), "serve to be ready")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60,
                            headers={"Authorization": f"Bearer {SERVE_KEY}"})

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return (self.tmp / "serve.log").read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("presets"))
    try:
        if s.proc.poll() is not None and "address already in use" in s.log():
            s.start()  # the embedded Redis took the free port chosen for the API first: another port
        assert s.proc.poll() is None, s.log()
        yield s
    finally:
        stop_process(s.proc, grace_s=60)


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
        assert view["report"]["summary"]["max_residual"] < 1e-3
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
        detail = r.json()["detail"]
        assert any(d["loc"] == loc and words in d["msg"] for d in detail), detail
