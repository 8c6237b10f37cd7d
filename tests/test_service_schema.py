"""Property tests: schemathesis against the OpenAPI schema (no 5xx, ever), and hypothesis on the schemas.

The fuzzed requests go to a second API process whose Redis database no worker reads, so requests that pass
validation are queued, never run. The number of examples is bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from schemathesis.checks import not_a_server_error

from app.main import create_app
from app.schemas import ErasureRequest, GenerateRequest
from erasepro_jobs.settings import Settings

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import KEYS, SHORT_SPEC, Stack  # noqa: E402

pytest_plugins = ["service_fixtures"]  # the running service (shared by every test_service_* module)

FUZZ_EXAMPLES = 25  # per operation (was 8)

# /readyz answers 503 by design on the fuzz API (no worker reads its queue)
schema = schemathesis.openapi.from_dict(create_app(Settings(data_dir=Path("/nonexistent"))).openapi()).exclude(
    path="/readyz")


STATUSES: dict[int, int] = {}  # status code -> count, over the whole fuzz run (printed at the end, with -s)


@pytest.fixture(scope="module")
def fuzz_url(svc: Stack) -> Iterator[str]:
    yield svc.start_fuzz_api()
    print(f"\nschemathesis: {sum(STATUSES.values())} requests, statuses {dict(sorted(STATUSES.items()))}")


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_never_answers_5xx(case, fuzz_url: str) -> None:
    response = case.call_and_validate(base_url=fuzz_url, headers={"Authorization": f"Bearer {KEYS['acme']}"},
                                      checks=[not_a_server_error])
    STATUSES[response.status_code] = STATUSES.get(response.status_code, 0) + 1


def test_fuzzed_job_ids_stay_inside_the_tenant(svc: Stack, fuzz_url: str) -> None:
    """acme's jobs on the fuzz API (at least the one made here, whatever else ran) are invisible to globex."""
    auth = {t: {"Authorization": f"Bearer {k}"} for t, k in KEYS.items()}
    with httpx.Client(base_url=fuzz_url) as c:
        made = c.post("/v1/erasures", json=SHORT_SPEC, headers=auth["acme"])
        assert made.status_code == 202, made.text
        mine = {j["id"] for j in c.get("/v1/erasures", params={"limit": 100}, headers=auth["acme"]).json()["items"]}
        assert made.json()["id"] in mine
        theirs = {j["id"] for j in c.get("/v1/erasures", params={"limit": 100}, headers=auth["globex"]).json()["items"]}
        assert not mine & theirs, f"globex sees acme's jobs: {mine & theirs}"
        for job_id in mine:
            assert c.get(f"/v1/erasures/{job_id}", headers=auth["globex"]).status_code == 404
        assert c.post(f"/v1/erasures/{made.json()['id']}/cancel", headers=auth["acme"]).status_code == 202


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(["base_model", "edits", "preserve", "method", "options", "timeout_s", "extra"])


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.dictionaries(keys, json_values, max_size=6))
def test_erasure_request_validation_only_raises_validation_errors(body: dict) -> None:
    """Arbitrary JSON: either a valid spec or a field-named validation error, nothing else."""
    from fastapi.exceptions import RequestValidationError

    try:
        req = ErasureRequest.model_validate(body)
        spec = req.to_spec()
    except ValidationError as exc:
        assert all(e["loc"] or e["type"] == "model_type" for e in exc.errors())
        return
    except RequestValidationError as exc:
        assert all(e["loc"][0] == "body" for e in exc.errors())
        return
    assert spec.edits and len(spec.edits) == len(req.edits)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.fixed_dictionaries({}, optional={
    "prompt": st.text(max_size=320), "negative_prompt": st.none() | st.text(max_size=320),
    "seed": st.integers(-5, 2**32), "steps": st.integers(-5, 200), "guidance": st.floats(allow_nan=True),
    "width": st.none() | st.integers(-8, 4100), "height": st.none() | st.integers(-8, 4100),
    "num_images": st.integers(-1, 6)}))
def test_generate_request_bounds(body: dict) -> None:
    try:
        req = GenerateRequest.model_validate(body)
    except ValidationError:
        return
    assert 1 <= len(req.prompt) <= 300 and req.prompt.strip()
    assert req.steps is None or 1 <= req.steps <= 150
    assert req.guidance is None or 0 <= req.guidance <= 50
    assert 1 <= req.num_images <= 4
    for side in (req.width, req.height):
        assert side is None or (side % 8 == 0 and 8 <= side <= 2048)
    assert (req.width or 1024) * (req.height or 1024) * req.num_images <= 4 * 1024 * 1024


def test_valid_request_round_trips_to_the_spec() -> None:
    req = ErasureRequest.model_validate({**SHORT_SPEC, "preserve": ["a bird"], "method": "erasepro",
                                         "options": {"ridge": 0.1, "layers": [0, -1], "schedule": "front"}})
    spec = req.to_spec()
    assert spec.method.name == "erasepro" and spec.method.ridge == 0.1 and spec.method.layers == [0, -1]
    uce = ErasureRequest.model_validate({**SHORT_SPEC, "method": "uce", "options": {"uce_lambda": 0.1}}).to_spec()
    assert uce.method.name == "uce" and uce.method.lam == 0.1
    assert spec.preserve == ["a bird"] and spec.edits[0].target == "a cat"


def test_uce_alone_is_the_2025_protocol_and_a_setting_it_fixes_is_a_422_naming_the_option() -> None:
    from fastapi.exceptions import RequestValidationError

    spec = ErasureRequest.model_validate({**SHORT_SPEC, "method": "uce"}).to_spec()
    assert (spec.method.protocol, spec.templates, spec.default_preserve) == ("uce2025", ["{}"], False)
    old = ErasureRequest.model_validate({**SHORT_SPEC, "method": "uce", "options": {"uce_protocol": "uce2023"}})
    assert old.to_spec().method.token_span == "to_end"
    for options, field in (({"uce_token_span": "to_end"}, "uce_token_span"),
                           ({"default_preserve": True}, "default_preserve"),
                           ({"uce_protocol": "uce2023", "uce_preserve_norm": "none"}, "uce_preserve_norm")):
        req = ErasureRequest.model_validate({**SHORT_SPEC, "method": "uce", "options": options})
        with pytest.raises(RequestValidationError) as exc:
            req.to_spec()
        err = exc.value.errors()[0]
        assert tuple(err["loc"]) == ("body", "options", field) and "custom" in err["msg"]
    custom = ErasureRequest.model_validate({**SHORT_SPEC, "method": "uce", "options": {
        "uce_protocol": "custom", "uce_token_span": "to_end", "uce_preserve_tokens": "sequence"}}).to_spec()
    assert custom.default_preserve is True and custom.method.preserve_positions() == "sequence"
