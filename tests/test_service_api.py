"""The REST surface: health, auth, the registry, bounds (422 naming the field), idempotency, tenancy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import httpx
import pytest

from app.auth import KeyStore
from erasepro_core.spec import MAX_EDITS, MAX_PROMPT_CHARS

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import ROOT, SHORT_SPEC, Stack, submit, wait_status  # noqa: E402

pytest_plugins = ["service_fixtures"]  # the running service (shared by every test_service_* module)


def test_app_never_imports_torch() -> None:
    code = textwrap.dedent("""
        import sys
        from app.main import app as asgi
        import app.cli, app.demo, app.serve, app.schemas, app.service, app.embedded, erasepro_jobs.registry, app.auth
        heavy = [m for m in ("torch", "diffusers", "transformers", "worker") if m in sys.modules]
        assert not heavy, heavy
        print("ok", len(asgi.routes))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "ERASEPRO_DATA_DIR": "/nonexistent"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_health_and_readiness(svc: Stack) -> None:
    assert httpx.get(f"{svc.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{svc.base_url}/readyz")
    assert ready.status_code == 200 and ready.json()["workers"] >= 1
    assert httpx.get(f"{svc.base_url}/openapi.json").json()["info"]["title"] == "ErasePro"
    assert httpx.get(f"{svc.base_url}/docs").status_code == 200


# ------------------------------------------------------------------------------------------------- auth
@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nope", "Basic dGVzdDp0ZXN0", "bearer x", "Token x"])
def test_missing_or_invalid_key_is_401(svc: Stack, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    for method, path in [("GET", "/v1/erasures"), ("GET", "/v1/base-models"), ("POST", "/v1/erasures"),
                         ("GET", "/v1/erasures/" + "0" * 32), ("GET", "/v1/generations/" + "0" * 32)]:
        r = httpx.request(method, svc.base_url + path, headers=headers, json=SHORT_SPEC if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"


def test_file_keys_are_hashed_and_revocable(svc: Stack) -> None:
    store = KeyStore(svc.data_dir / "api_keys.json")
    key, rec = store.create("initech", name="ci")
    assert key not in (svc.data_dir / "api_keys.json").read_text()
    with httpx.Client(base_url=svc.base_url, headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.get("/v1/erasures").status_code == 200
        store.revoke(rec.id)
        assert c.get("/v1/erasures").status_code == 401
    listed = subprocess.run([sys.executable, "-m", "erasepro_core.cli", "keys", "list", "--json"], cwd=ROOT,
                            capture_output=True, text=True, env={**svc.env})
    assert listed.returncode == 0, listed.stderr
    assert any(k["id"] == rec.id and k["revoked_at"] for k in json.loads(listed.stdout))


def test_keys_cli_create_and_revoke(svc: Stack) -> None:
    run = lambda *a: subprocess.run([sys.executable, "-m", "erasepro_core.cli", "keys", *a],  # noqa: E731
                                    cwd=ROOT, capture_output=True, text=True, env={**svc.env})
    made = run("create", "hooli", "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    with httpx.Client(base_url=svc.base_url, headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.get("/v1/erasures").json()["items"] == []
        assert run("revoke", json.loads(made.stdout)["id"]).returncode == 0
        assert c.get("/v1/erasures").status_code == 401
    assert run("create", "bad tenant!").returncode == 2
    assert run("revoke", "nosuchkey").returncode == 2


# --------------------------------------------------------------------------------------------- registry
def test_base_models_registry(acme: httpx.Client) -> None:
    items = {m["name"]: m for m in acme.get("/v1/base-models").json()["items"]}
    assert items["tiny"]["available"] and items["tiny"]["source"] == "path"
    assert items["absent"]["available"] is False
    assert "bundled" not in items  # ERASEPRO_BUNDLED=0 in the test stack


# ------------------------------------------------------------------------------------------- bad input
def _err_locs(r: httpx.Response) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in r.json()["errors"]]


def _edits(n: int) -> list[dict]:
    return [{"target": f"thing {i}"} for i in range(n)]


BAD_ERASURES = [
    ({**SHORT_SPEC, "edits": []}, "body.edits"),
    ({**SHORT_SPEC, "edits": _edits(MAX_EDITS + 1)}, "body.edits"),
    ({**SHORT_SPEC, "edits": [{"target": "x" * (MAX_PROMPT_CHARS + 1)}]}, "body.edits.0.target"),
    ({**SHORT_SPEC, "edits": [{"target": "  "}]}, "body.edits.0.target"),
    ({**SHORT_SPEC, "edits": [{"target": "cat", "anchor": "Cat"}]}, "body.edits.0"),
    ({**SHORT_SPEC, "edits": [{"target": "cat"}, {"target": "CAT"}]}, "body.edits"),
    ({**SHORT_SPEC, "edits": [{"target": "cat", "extra": 1}]}, "body.edits.0.extra"),
    ({**SHORT_SPEC, "preserve": ["y" * (MAX_PROMPT_CHARS + 1)]}, "body.preserve.0"),
    ({**SHORT_SPEC, "method": "magic"}, "body.method"),
    ({**SHORT_SPEC, "options": {"schedule": "sideways"}}, "body.options.schedule"),
    ({**SHORT_SPEC, "options": {"token_policy": "all"}}, "body.options.token_policy"),
    ({**SHORT_SPEC, "options": {"ridge": 0}}, "body.options.ridge"),
    ({**SHORT_SPEC, "options": {"preserve_weight": -1}}, "body.options.preserve_weight"),
    ({**SHORT_SPEC, "options": {"uce_lambda": 1e9}}, "body.options.uce_lambda"),
    ({**SHORT_SPEC, "options": {"seed": -1}}, "body.options.seed"),
    ({**SHORT_SPEC, "options": {"templates": []}}, "body.options.templates"),
    ({**SHORT_SPEC, "options": {"templates": ["no placeholder"]}}, "body.options.templates"),
    ({**SHORT_SPEC, "options": {"templates": ["{} and {}"]}}, "body.options.templates"),
    ({**SHORT_SPEC, "options": {"templates": ["{} {x}"]}}, "body.options.templates.0"),  # issue 9's bar
    ({**SHORT_SPEC, "options": {"templates": ["{}}"]}}, "body.options.templates.0"),
    ({**SHORT_SPEC, "options": {"ridge": 5e-324}}, "body.options.ridge"),
    ({**SHORT_SPEC, "options": {"ridge": "1e-2"}}, "body.options.ridge"),
    ({**SHORT_SPEC, "edits": [{"target": "a\u0000b"}]}, "body.edits.0.target"),
    ({**SHORT_SPEC, "edits": [{"target": "a\u200bb"}]}, "body.edits.0.target"),
    ({**SHORT_SPEC, "options": {"layers": [999], "schedule": "front"}}, "body.options.layers"),
    ({**SHORT_SPEC, "options": {"layers": [1, 1]}}, "body.options.layers"),
    ({**SHORT_SPEC, "options": {"layers": list(range(129))}}, "body.options.layers"),
    ({**SHORT_SPEC, "options": {"path": "/etc/passwd"}}, "body.options.path"),
    ({**SHORT_SPEC, "base_model": "nope"}, "body.base_model"),
    ({**SHORT_SPEC, "base_model": "../../etc"}, "body.base_model"),
    ({**SHORT_SPEC, "base_model": "/models/sd15"}, "body.base_model"),
    ({**SHORT_SPEC, "timeout_s": 0}, "body.timeout_s"),
    ({**SHORT_SPEC, "timeout_s": 3601}, "body.timeout_s"),
    ({**SHORT_SPEC, "unexpected": True}, "body.unexpected"),
    ({"edits": SHORT_SPEC["edits"]}, "body.base_model"),
    ([1, 2, 3], "body"),
]


@pytest.mark.parametrize(("body", "loc"), BAD_ERASURES, ids=[b[1] + f"-{i}" for i, b in enumerate(BAD_ERASURES)])
def test_erasure_bounds_are_422_naming_the_field(acme: httpx.Client, body: object, loc: str) -> None:
    r = acme.post("/v1/erasures", json=body)
    assert r.status_code == 422, r.text
    assert any(found.startswith(loc) for found in _err_locs(r)), (loc, r.json())
    assert loc.split(".")[-1] in r.json()["detail"] or loc == "body"


BAD_GENERATIONS = [
    ({"prompt": ""}, "body.prompt"),
    ({"prompt": "   "}, "body.prompt"),
    ({"prompt": "p" * (MAX_PROMPT_CHARS + 1)}, "body.prompt"),
    ({"prompt": "ok", "negative_prompt": "n" * (MAX_PROMPT_CHARS + 1)}, "body.negative_prompt"),
    ({"prompt": "ok", "steps": 0}, "body.steps"),
    ({"prompt": "ok", "steps": 151}, "body.steps"),
    ({"prompt": "ok", "width": 33}, "body.width"),
    ({"prompt": "ok", "height": 4096}, "body.height"),
    ({"prompt": "ok", "num_images": 0}, "body.num_images"),
    ({"prompt": "ok", "num_images": 5}, "body.num_images"),
    ({"prompt": "ok", "width": 2048, "height": 2048, "num_images": 2}, "body.num_images"),
    ({"prompt": "ok", "guidance": 51}, "body.guidance"),
    ({"prompt": "ok", "seed": 2**31}, "body.seed"),
    ({"prompt": "ok", "scheduler": "ddim"}, "body.scheduler"),
]


@pytest.mark.parametrize(("body", "loc"), BAD_GENERATIONS, ids=[b[1] + f"-{i}" for i, b in enumerate(BAD_GENERATIONS)])
def test_generation_bounds_are_422_naming_the_field(acme: httpx.Client, finished: dict, body: dict, loc: str) -> None:
    for path in (f"/v1/erasures/{finished['id']}/generate", "/v1/base-models/tiny/generate"):
        r = acme.post(path, json=body)
        assert r.status_code == 422, (path, r.text)
        assert loc in _err_locs(r), r.json()


def test_malformed_bodies_and_queries_are_clear_4xx(acme: httpx.Client, finished: dict) -> None:
    as_json = {"Content-Type": "application/json"}
    r = acme.post("/v1/erasures", content=b'{"base_model": "tiny", "edits": [', headers=as_json)
    assert r.status_code == 422 and r.json()["errors"][0]["type"] == "json_invalid"
    r = acme.post("/v1/erasures", content=b"NaN", headers=as_json)
    assert r.status_code == 422
    r = acme.post("/v1/erasures", content=json.dumps(SHORT_SPEC).encode(), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = acme.post("/v1/erasures", content=b"base_model=tiny", headers=form)
    assert r.status_code == 415
    r = acme.post("/v1/erasures", content=json.dumps(SHORT_SPEC).encode(), headers={"Content-Type": ""})
    assert r.status_code == 415
    r = acme.post(f"/v1/erasures/{finished['id']}/generate", content=b"{}", headers={"Content-Type": "text/csv"})
    assert r.status_code == 415
    huge = json.dumps({**SHORT_SPEC, "preserve": ["z" * 300] * 20000}).encode()
    r = acme.post("/v1/erasures", content=huge, headers=as_json)
    assert r.status_code == 413
    r = acme.post("/v1/erasures", json=SHORT_SPEC, headers={"Idempotency-Key": "k" * 256})
    assert r.status_code == 422 and "idempotency" in r.text.lower()
    for params in ({"limit": 0}, {"limit": 101}, {"cursor": "garbage"}, {"limit": "ten"}):
        r = acme.get("/v1/erasures", params=params)
        assert r.status_code == 422, (params, r.text)
    r = acme.get(f"/v1/erasures/{finished['id']}/checkpoint", params={"format": "zip"})
    assert r.status_code == 422 and "format" in _err_locs(r)[0]
    for wait in ("-1", "nan", "1e9"):
        r = acme.post(f"/v1/erasures/{finished['id']}/generate", json={"prompt": "x"}, params={"wait": wait})
        assert r.status_code == 422, (wait, r.text)
    for bad in ("not-an-id", "0" * 31, "../../etc/passwd", "Z" * 32, "0" * 32):
        assert acme.get(f"/v1/erasures/{bad}").status_code == 404
        assert acme.delete(f"/v1/erasures/{bad}").status_code == 404
        assert acme.get(f"/v1/generations/{bad}").status_code == 404
    # "registered and installed" is decided in one place (Registry.require): an unknown name in the path is a
    # missing resource (404), a registered model that is not installed is the server's state (409, body too)
    for name, status, says in (("nope", 404, "unknown base model"), ("absent", 409, "registered but not installed")):
        r = acme.post(f"/v1/base-models/{name}/generate", json={"prompt": "x"})
        assert r.status_code == status and says in r.json()["detail"], r.text
    r = acme.post("/v1/erasures", json={**SHORT_SPEC, "base_model": "absent"})
    assert r.status_code == 409 and "registered but not installed" in r.json()["detail"], r.text


# ------------------------------------------------------------------------------------------- idempotency
def test_idempotency_key_returns_the_same_job(acme: httpx.Client, globex: httpx.Client) -> None:
    body = {**SHORT_SPEC, "edits": [{"target": "a teapot", "anchor": "a kettle"}]}
    first = acme.post("/v1/erasures", json=body, headers={"Idempotency-Key": "retry-me-1"})
    again = acme.post("/v1/erasures", json=body, headers={"Idempotency-Key": "retry-me-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert first.headers["location"] == f"/v1/erasures/{first.json()['id']}"
    changed = acme.post("/v1/erasures", json={**body, "method": "uce"}, headers={"Idempotency-Key": "retry-me-1"})
    assert changed.status_code == 409
    other = globex.post("/v1/erasures", json=body, headers={"Idempotency-Key": "retry-me-1"})
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
    fresh = acme.post("/v1/erasures", json=body)
    assert fresh.json()["id"] != first.json()["id"]
    listed = [j["id"] for j in acme.get("/v1/erasures", params={"limit": 100}).json()["items"]]
    assert listed.count(first.json()["id"]) == 1
    for job in (first, other, fresh):
        owner = globex if job is other else acme
        wait_status(owner, job.json()["id"])


# ---------------------------------------------------------------------------------------------- tenancy
def test_tenant_isolation_on_every_route(acme: httpx.Client, globex: httpx.Client, finished: dict) -> None:
    jid = finished["id"]
    mine = acme.get(f"/v1/erasures/{jid}")
    assert mine.status_code == 200
    missing = globex.get("/v1/erasures/" + "f" * 32)
    theirs = globex.get(f"/v1/erasures/{jid}")
    assert theirs.status_code == missing.status_code == 404
    # indistinguishable from a missing id (but for the path each problem names as its instance)
    assert {**theirs.json(), "instance": ""} == {**missing.json(), "instance": ""}
    assert globex.get(f"/v1/erasures/{jid}/checkpoint").status_code == 404
    assert globex.head(f"/v1/erasures/{jid}/checkpoint").status_code == 404
    assert globex.get(f"/v1/erasures/{jid}/checkpoint", params={"format": "diffusers"}).status_code == 404
    assert globex.post(f"/v1/erasures/{jid}/generate", json={"prompt": "a cat", **{"steps": 2}}).status_code == 404
    assert globex.delete(f"/v1/erasures/{jid}").status_code == 404
    assert jid not in [j["id"] for j in globex.get("/v1/erasures", params={"limit": 100}).json()["items"]]
    gen = acme.post(f"/v1/erasures/{jid}/generate", json={"prompt": "a cat", "steps": 2, "width": 32, "height": 32},
                    params={"wait": 0})
    assert gen.status_code == 202
    gid = gen.json()["id"]
    assert globex.get(f"/v1/generations/{gid}").status_code == 404
    assert globex.get(f"/v1/generations/{gid}/images").status_code == 404
    assert acme.get(f"/v1/generations/{gid}").status_code == 200
    # the job still belongs to acme, untouched
    assert acme.get(f"/v1/erasures/{jid}").json()["status"] == "succeeded"
    # ids of other kinds do not cross over either
    assert acme.get(f"/v1/erasures/{gid}").status_code == 404
    assert acme.get(f"/v1/generations/{jid}").status_code == 404


def test_submitted_job_links_and_listing(acme: httpx.Client) -> None:
    job_id = submit(acme, {**SHORT_SPEC, "edits": [{"target": "a lamp"}], "preserve": ["a chair"],
                           "options": {"schedule": "uniform", "token_policy": "last"}})
    view = acme.get(f"/v1/erasures/{job_id}").json()
    assert view["status"] in ("queued", "running", "succeeded")
    assert view["spec"]["schedule"] == "uniform" and view["spec"]["preserve"] == ["a chair"]
    assert view["links"]["self"] == f"/v1/erasures/{job_id}"
    done = wait_status(acme, job_id)
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"stage": "done", "fraction": 1.0}
    assert set(done["links"]) >= {"checkpoint", "checkpoint_diffusers", "generate"}
    assert done["report"]["summary"]["kv_residual"] < 1e-3
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
