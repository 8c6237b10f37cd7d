"""Storage quotas, ``GET /v1/usage`` and the retention of exports and images (issue 27), on the file system and on
S3 alike: a real SeaweedFS (tests/s3_server.py), a real redis-server, and the API in-process for the door;
``test_retention_runs_in_the_worker`` runs the whole service (uvicorn, ``python -m worker`` with its heavy lane)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from s3_server import S3Server

from app.main import create_app
from erasepro_jobs import store
from erasepro_jobs.registry import bundled_available
from erasepro_jobs.settings import Settings
from erasepro_jobs.storage import FileStorage, Storage
from erasepro_jobs.storage.s3 import S3Storage
from erasepro_jobs.usage import QuotaExceeded, Retention, check_quota, tenant_usage

KEYS = {"acme": "quota-key-acme-0123456789abcdef", "globex": "quota-key-globex-0123456789abcdef"}
KiB = 1024


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


@pytest.fixture(params=["fs", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The settings that select a store (``storage_url`` …) and that store, empty: files, or a fresh S3 prefix."""
    if request.param == "fs":
        return {"settings": {"data_dir": tmp_path / "data"}, "storage": FileStorage(tmp_path / "data")}
    server: S3Server = request.getfixturevalue("s3_server")
    for name, value in server.env().items():  # the API's boto3 finds the credentials the standard way
        monkeypatch.setenv(name, value)
    prefix = f"q-{uuid.uuid4().hex[:8]}"
    return {"settings": {"data_dir": tmp_path / "data", "storage_url": f"s3://{server.bucket}/{prefix}",
                         "s3_endpoint_url": server.endpoint},
            "storage": S3Storage(server.bucket, prefix, tmp_path / "scratch", client=server.client())}


def settings(redis_url: str, where: dict[str, Any], **changes: Any) -> Settings:
    return Settings(redis_url=redis_url, api_keys_env=",".join(f"{t}:{k}" for t, k in KEYS.items()),
                    rate_limit=0, rate_limit_address=0, rate_limit_unauthenticated=0, job_memory="8GiB",
                    **where["settings"], **changes)


def checkpoint(storage: Storage, tenant: str, exports: dict[str, int] = {}, delta: int = 10 * KiB,  # noqa: B006
               images: int = 0) -> str:
    """A complete checkpoint as the worker leaves it: delta, manifest naming every file, exports, judged images."""
    job_id = store.new_job_id()
    files = {}
    for name, size in {store.DELTA_FILE: delta, **exports}.items():
        info = storage.put_bytes(store.checkpoint_key(tenant, job_id, name), os.urandom(size))
        files[name] = {"sha256": info.sha256, "size": size}
    for i in range(images):
        storage.put_bytes(store.checkpoint_key(tenant, job_id, f"evaluations/{'e' * 32}/p{i:02d}-after-0.png"),
                          os.urandom(KiB))
    store.write_manifest(storage, tenant, job_id, {"id": job_id, "tenant": tenant, "files": files})
    return job_id


# ---------------------------------------------------------------------------------------------- usage, quota
def test_usage_by_kind_and_quota(where: dict[str, Any]) -> None:
    storage = where["storage"]
    job = checkpoint(storage, "acme", exports={"pipeline.tar": 40 * KiB, "lora.tar": 5 * KiB}, images=3)
    storage.put_bytes("tenants/acme/idempotency/" + "a" * 64 + ".json", b"{}")
    checkpoint(storage, "globex")
    used = tenant_usage(storage, "acme")
    manifest = storage.stat(store.checkpoint_key("acme", job, store.MANIFEST)).size
    assert used.by_kind == {"checkpoints": 10 * KiB + manifest, "exports": 45 * KiB, "images": 3 * KiB, "other": 2}
    assert len(used.evictable) == 5  # two exports, three images: never the delta or the manifest
    assert check_quota(storage, "acme", used.total + 1).total == used.total
    assert check_quota(storage, "acme", 0).total == used.total  # 0: no quota
    with pytest.raises(QuotaExceeded) as exc:
        check_quota(storage, "acme", used.total)  # reached is refused, not only exceeded
    assert exc.value.used == used.total and "ERASEPRO_TENANT_STORAGE" in str(exc.value)
    check_quota(storage, "globex", used.total)  # another tenant's bytes are not acme's


def test_quota_settings() -> None:
    assert Settings(tenant_storage="2GiB").tenant_storage == 2 * 2**30
    assert Settings(tenant_storage="off").tenant_storage == Settings(tenant_storage=0).tenant_storage == 0
    assert Settings().tenant_storage == 20 * 2**30
    with pytest.raises(ValueError):
        Settings(tenant_storage="lots")


@pytest.mark.skipif(not bundled_available(), reason="the bundled model is not installed")
def test_the_door_refuses_new_work_over_the_quota(redis_url: str, where: dict[str, Any]) -> None:
    """The review stored 472 MB of exports with no quota; past ERASEPRO_TENANT_STORAGE every job that writes is a
    429 that names the quota and the usage, for that tenant only; GET /v1/usage shows the bytes by kind."""
    storage = where["storage"]
    quota = 64 * KiB
    checkpoint(storage, "acme", exports={"pipeline.tar": 70 * KiB})
    body = {"base_model": "bundled", "edits": [{"target": "circle", "anchor": "square"}]}
    with (TestClient(create_app(settings(redis_url, where, tenant_storage=quota))) as c,
          redis.Redis.from_url(redis_url, decode_responses=True) as r):
        acme = {"Authorization": f"Bearer {KEYS['acme']}"}
        usage = c.get("/v1/usage", headers=acme).json()
        assert usage["storage"]["quota_bytes"] == quota and usage["storage"]["used_bytes"] > quota, usage
        assert usage["storage"]["by_kind"]["exports"] == 70 * KiB and usage["jobs"]["active"] == 0, usage
        for method, path, payload in (("post", "/v1/erasures", body),
                                      ("post", "/v1/base-models/bundled/generate", {"prompt": "a circle"})):
            resp = c.request(method, path, json=payload, headers=acme)
            assert resp.status_code == 429, resp.text
            got = resp.json()
            assert got["quota"] == quota and got["used"] == usage["storage"]["used_bytes"], got
            assert "ERASEPRO_TENANT_STORAGE" in got["detail"] and "64.0 KiB" in got["detail"], got
        assert r.scard(store.k_active("acme")) == 0  # nothing was queued
        globex = {"Authorization": f"Bearer {KEYS['globex']}"}
        accepted = c.post("/v1/erasures", json=body, headers=globex)
        assert accepted.status_code == 202, accepted.text
        view = c.get("/v1/usage", headers=globex).json()
        assert view["jobs"] == {"active": 1, "limit": 8, "by_kind": {"erasure": 1}}, view
        job_id = accepted.json()["id"]
        assert c.post(f"/v1/erasures/{job_id}/cancel", headers=globex).status_code == 202  # cancelled (no worker)
        doc = c.get("/openapi.json").json()
        assert doc["paths"]["/v1/usage"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/UsageView"}


# ------------------------------------------------------------------------------------------------- retention
def test_retention_removes_expired_exports_and_images(redis_url: str, where: dict[str, Any]) -> None:
    """A 2 s TTL: the export leaves its manifest and the store (its Redis pointer too, so the next request
    exports again), the judged images go, and the delta and manifest stay."""
    storage = where["storage"]
    job = checkpoint(storage, "acme", exports={"pipeline.tar": 20 * KiB}, images=2)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.set(store.k_export(job, "diffusers"), "f" * 32)
    retention = Retention(r, storage, settings(redis_url, where, export_ttl_s=2, image_ttl_s=2))
    assert retention.sweep() == []  # nothing is older than two seconds yet (S3 keeps whole seconds)
    time.sleep(3.1)
    removed = retention.sweep()
    assert len(removed) == 3 and store.checkpoint_key("acme", job, "pipeline.tar") in removed, removed
    keys = {o.key for o in storage.list("tenants/acme")}
    assert keys == {store.checkpoint_key("acme", job, n) for n in (store.DELTA_FILE, store.MANIFEST)}, keys
    assert set(store.read_manifest(storage, "acme", job)["files"]) == {store.DELTA_FILE}
    assert r.get(store.k_export(job, "diffusers")) is None
    r.close()


def test_retention_over_the_quota_removes_the_oldest_first(redis_url: str, where: dict[str, Any]) -> None:
    """No TTL; over the quota, exports and images go oldest first until the tenant fits, never a checkpoint and
    never an export still being written (its tar is in the store, not yet in the manifest)."""
    storage = where["storage"]
    old = checkpoint(storage, "acme", exports={"pipeline.tar": 30 * KiB})
    time.sleep(1.1)  # S3's LastModified has a resolution of a second
    new = checkpoint(storage, "acme", exports={"lora.tar": 30 * KiB})
    writing = store.checkpoint_key("acme", new, "kohya.tar")
    storage.put_bytes(writing, os.urandom(30 * KiB))
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    total = tenant_usage(storage, "acme").total

    def sweep(quota: int) -> list[str]:
        return Retention(r, storage, settings(redis_url, where, tenant_storage=quota, export_ttl_s=0,
                                              image_ttl_s=0)).sweep()

    assert sweep(total + 1) == []
    assert sweep(total - 10 * KiB) == [store.checkpoint_key("acme", old, "pipeline.tar")]  # the oldest is enough
    assert sweep(1) == [store.checkpoint_key("acme", new, "lora.tar")]  # all it may remove: checkpoints stay
    assert storage.exists(writing) and storage.exists(store.checkpoint_key("acme", old, store.DELTA_FILE))
    assert set(store.read_manifest(storage, "acme", new)["files"]) == {store.DELTA_FILE}
    assert tenant_usage(storage, "acme").by_kind["exports"] == 30 * KiB  # the one being written
    r.close()


def test_a_sweep_runs_once_per_interval_across_processes(redis_url: str, where: dict[str, Any]) -> None:
    """Every worker's heartbeat asks; one Redis key (held for the interval) lets one of them sweep."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.delete("erasepro:retention:swept")
    one, two = (Retention(r, where["storage"], settings(redis_url, where, retention_interval_s=60, tenant_storage=1))
                for _ in range(2))
    assert one.sweep_if_due() == 0 and r.ttl("erasepro:retention:swept") > 50  # swept: nothing to remove
    job = checkpoint(where["storage"], "acme", images=1)  # over the 1-byte quota: the image would go
    assert two.sweep_if_due() == 0 and len(tenant_usage(where["storage"], "acme").evictable) == 1  # not due
    r.delete("erasepro:retention:swept")
    assert two.sweep_if_due() == 1 and tenant_usage(where["storage"], "acme").evictable == []
    assert where["storage"].exists(store.checkpoint_key("acme", job, store.DELTA_FILE))
    r.delete("erasepro:retention:swept")
    r.close()


# ---------------------------------------------------------------------------------------- the whole service
pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import SHORT_SPEC, Stack, wait_for, wait_status  # noqa: E402

QUOTA = 64 * 2**20  # above the tiny model's 20 MiB export: that one goes by its TTL, not the quota


class RetentionStack(Stack):
    """The service on the tiny model with a 20 s export TTL swept every second and a 64 MiB quota (a 30 s lease:
    no worker is killed here, and a loaded machine must not lose one); its worker
    serves erase/generate/webhooks and starts its heavy lane (exports) as a second process."""

    def build_models(self) -> None:
        from erasepro_core.pipeline import save_pipeline
        from erasepro_core.tiny import tiny_sd_pipeline

        save_pipeline(tiny_sd_pipeline(seed=0), self.models_dir / "tiny")
        (self.tmp / "models.toml").write_text(f'[models.tiny]\npath = "{self.models_dir / "tiny"}"\nfamily = "sd1"\n',
                                              encoding="utf-8")

    def start_worker(self) -> None:
        self.env.update(ERASEPRO_EXPORT_TTL_S="20", ERASEPRO_RETENTION_INTERVAL_S="1",
                        ERASEPRO_TENANT_STORAGE=str(QUOTA), ERASEPRO_LEASE_TTL_S="30")
        super().start_worker()


@pytest.fixture(scope="module")
def retention_stack() -> Iterator[Stack]:
    stack = RetentionStack()
    try:
        yield stack.start()
    finally:
        stack.stop()


def test_retention_runs_in_the_worker_and_the_door_refuses_exports(retention_stack: Stack) -> None:
    """End to end: an export expires by its TTL (swept by the worker), and a tenant past its quota gets 429 for
    an export, an erasure and a generation, until it is back under it."""
    stack = retention_stack
    with stack.client("acme") as acme, stack.client("globex") as globex:
        job = wait_status(acme, acme.post("/v1/erasures", json=SHORT_SPEC).json()["id"])
        assert job["status"] == "succeeded", (job, stack.log_tail())
        url = f"/v1/erasures/{job['id']}/checkpoint"
        tar = wait_for(lambda: (r := acme.get(url, params={"format": "diffusers"}, follow_redirects=True))
                       .status_code == 200 and r, "the export", every=0.5)
        usage = acme.get("/v1/usage").json()["storage"]
        assert usage["by_kind"]["exports"] == len(tar.content) and usage["used_bytes"] < QUOTA, usage
        wait_for(lambda: "pipeline.tar" not in acme.get(f"/v1/erasures/{job['id']}").json()["artifacts"],
                 "retention to remove the export", deadline_s=60, every=0.5)
        assert not (stack.data_dir / store.checkpoint_key("acme", job["id"], "pipeline.tar")).exists()
        assert acme.get("/v1/usage").json()["storage"]["by_kind"]["exports"] == 0
        assert acme.get(url, params={"format": "diffusers"}).status_code == 202  # the next request exports again

        # globex past its quota (a blob retention may not remove): every new job is 429, reads still work
        done = wait_status(globex, globex.post("/v1/erasures", json=SHORT_SPEC).json()["id"])
        assert done["status"] == "succeeded"
        blob = stack.data_dir / "tenants" / "globex" / "idempotency" / ("b" * 64 + ".json")
        blob.parent.mkdir(parents=True, exist_ok=True)
        with open(blob, "wb") as f:
            f.truncate(QUOTA)  # sparse: its size counts, the disk is spared
        try:
            gurl = f"/v1/erasures/{done['id']}"
            for resp in (globex.get(f"{gurl}/checkpoint", params={"format": "diffusers"}),
                         globex.post("/v1/erasures", json=SHORT_SPEC),
                         globex.post(f"{gurl}/generate", json={"prompt": "a cat", "steps": 2, "width": 32,
                                                               "height": 32})):
                assert resp.status_code == 429 and resp.json()["quota"] == QUOTA, resp.text
                assert resp.json()["used"] > QUOTA and "ERASEPRO_TENANT_STORAGE" in resp.json()["detail"]
            assert globex.get(f"{gurl}/checkpoint").status_code == 200
        finally:
            blob.unlink()
        assert globex.get(f"{gurl}/checkpoint", params={"format": "diffusers"}).status_code == 202
        for client, job_id in ((acme, job["id"]), (globex, done["id"])):
            wait_for(lambda c=client, j=job_id: c.delete(f"/v1/erasures/{j}").status_code == 204,
                     "the erasure to be deleted (after its export)", every=0.5)
