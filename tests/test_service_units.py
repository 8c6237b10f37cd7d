"""Unit tests of the service's building blocks (no server): registry, keys, cursors, disk records, model cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.auth import KeyStore, KeyStoreError, parse_env_keys
from app.service import erasure_view
from erasepro_jobs import store
from erasepro_jobs.listing import decode_cursor, encode_cursor
from erasepro_jobs.registry import Registry, RegistryError, parse_registry
from erasepro_jobs.storage import FileStorage


# ---------------------------------------------------------------------------------------------- registry
def test_registry_parses_paths_and_hub_ids(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model_index.json").write_text("{}")
    models = parse_registry(f'[models.a]\npath = "{tmp_path / "m"}"\ndtype = "float16"\n'
                            '[models.b]\nhub_id = "org/model"\nfamily = "sdxl"\n'
                            f'[models.c]\npath = "{tmp_path / "missing"}"\n')
    assert models["a"].available and models["a"].source == "path" and models["a"].dtype == "float16"
    assert models["b"].ref == "org/model" and models["b"].family == "sdxl"
    assert models["c"].available is False


@pytest.mark.parametrize("text", [
    "[models.a]\n",  # neither path nor hub_id
    '[models.a]\npath = "/x"\nhub_id = "y/z"\n',  # both
    '[models.a]\npath = "/x"\ndtype = "int8"\n',
    '[models.a]\npath = "/x"\nweights = "w.ckpt"\n',
    '[models."../x"]\npath = "/x"\n',
    '[models.bundled]\npath = "/x"\n',
    "models = 3\n",
    "not toml [",
    '[models.a]\npath = 3\n',
])
def test_registry_errors_name_the_entry(text: str) -> None:
    with pytest.raises(RegistryError):
        parse_registry(text, "reg.toml")


def test_registry_reloads_on_change(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text('[models.a]\nhub_id = "o/a"\n')
    reg = Registry(f, include_bundled=True)
    assert set(reg.models()) == {"bundled", "canvas", "a"}  # the two shipped models, then the file's
    f.write_text('[models.a]\nhub_id = "o/a"\n[models.bb]\nhub_id = "o/b"\n')
    assert reg.get("bb") is not None and reg.get("../etc") is None
    with pytest.raises(RegistryError):
        Registry(tmp_path / "nope.toml").models()


# ------------------------------------------------------------------------------------------------- keys
def test_keystore_hashes_authenticates_and_revokes(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path / "keys.json", env_keys="dev:plain-dev-key")
    key, rec = ks.create("acme", name="first")
    assert key not in (tmp_path / "keys.json").read_text()
    assert ks.authenticate(key) == "acme"
    assert ks.authenticate("plain-dev-key") == "dev"
    assert ks.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert ks.authenticate("") is None and ks.authenticate("x" * 10000) is None
    ks.revoke(rec.id)
    assert ks.authenticate(key) is None
    assert [r.revoked_at is not None for r in ks.list()] == [True]
    with pytest.raises(KeyStoreError):
        ks.revoke("0" * 12)
    with pytest.raises(KeyStoreError):
        ks.create("no spaces please")
    assert oct((tmp_path / "keys.json").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("text", ["nocolon", "t:", ":k", "bad tenant:key"])
def test_env_keys_are_validated(text: str) -> None:
    with pytest.raises(ValueError):
        parse_env_keys(text)


# ---------------------------------------------------------------------------------------------- cursors
@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=0, max_value=4e9, allow_nan=False), st.uuids())
def test_cursor_round_trip(ts: float, uid) -> None:
    assert decode_cursor(encode_cursor((ts, uid.hex))) == (ts, uid.hex)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_garbage_cursors_are_value_errors(text: str) -> None:
    try:
        ts, job_id = decode_cursor(text)
    except ValueError:
        return
    assert store.JOB_ID_RE.match(job_id) and ts == ts


# ------------------------------------------------------------------------------------------ disk records
def test_manifest_cache_serves_only_complete_checkpoints(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    jid = store.new_job_id()
    d = tmp_path / "tenants" / "acme" / "erasures" / jid
    storage.put_bytes(store.checkpoint_key("acme", jid, store.DELTA_FILE), b"delta")
    assert store.list_checkpoints(storage, "acme") == {}  # no manifest yet: not a checkpoint
    cache = store.ManifestCache()
    assert cache.read(storage, "acme", jid) is None
    store.write_manifest(storage, "acme", jid, {"id": jid, "tenant": "acme", "created_at": 1.0, "files": {}})
    assert list(store.list_checkpoints(storage, "acme")) == [jid]
    assert cache.read(storage, "acme", jid)["id"] == jid
    (d / store.MANIFEST).write_text(json.dumps({"id": "someone-else"}))
    assert cache.read(storage, "acme", jid) is None  # a manifest must name its own checkpoint
    store.delete_checkpoint(storage, "acme", jid)
    assert not d.exists() and store.list_checkpoints(storage, "acme") == {}
    with pytest.raises(ValueError):
        store.checkpoint_prefix("acme", "../../etc")


def test_view_from_manifest_only() -> None:
    jid = store.new_job_id()
    manifest = {"id": jid, "tenant": "acme", "created_at": 10.0, "started_at": 11.0, "finished_at": 12.0,
                "spec": {"method": "uce"}, "report": {"summary": {}},
                "base_model": {"name": "tiny", "fingerprint": "f"},
                "files": {"delta.safetensors": {"sha256": "s", "size": 3}}, "timings": {"solve_s": 1}}
    view = erasure_view(None, manifest)
    assert view["status"] == "succeeded" and view["method"] == "uce" and view["base_model"] == "tiny"
    assert view["artifacts"]["delta.safetensors"]["size"] == 3 and "checkpoint" in view["links"]
    gone = erasure_view({"id": jid, "status": "succeeded", "base_model": "tiny"}, None)
    assert gone["status"] == "failed" and "missing" in gone["error"]


# ------------------------------------------------------------------------------------------- model cache
def test_pipeline_cache_is_a_bounded_lru(tmp_path: Path) -> None:
    from erasepro_core.pipeline import save_pipeline
    from erasepro_core.tiny import tiny_sd_pipeline
    from erasepro_jobs.registry import BaseModelInfo
    from worker.cache import PipelineCache

    infos = []
    for seed in (0, 1):
        save_pipeline(tiny_sd_pipeline(seed=seed), tmp_path / f"m{seed}")
        infos.append(BaseModelInfo(name=f"m{seed}", ref=str(tmp_path / f"m{seed}"), source="path"))
    cache = PipelineCache(capacity=1, device="cpu")
    first = cache.get(infos[0])
    assert not first.hit and first.load_s > 0
    again = cache.get(infos[0])
    assert again.hit and again.pipe is first.pipe and again.load_s == 0
    cache.get(infos[1])
    assert cache.names() == ["m1"]  # m0 evicted
    assert not cache.get(infos[0]).hit
    cache.evict(infos[0])
    assert cache.names() == []


def test_redis_urls_are_redacted_for_logs() -> None:
    from erasepro_jobs.settings import redact_url

    assert redact_url("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact_url("rediss://user:s3cret@host/1") == "rediss://user:***@host/1"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


def test_tenant_limits_parse_and_reject_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    from erasepro_jobs.settings import Settings

    monkeypatch.setenv("ERASEPRO_MAX_ACTIVE_JOBS", "3")
    monkeypatch.setenv("ERASEPRO_TENANT_MAX_ACTIVE", "acme:10,b-2:1")
    s = Settings.from_env()
    assert (s.active_limit("acme"), s.active_limit("b-2"), s.active_limit("other")) == (10, 1, 3)
    for bad in ("acme", "acme:0", ":4", "acme:x"):
        monkeypatch.setenv("ERASEPRO_TENANT_MAX_ACTIVE", bad)
        with pytest.raises(ValueError):
            Settings.from_env()


def test_settings_come_from_the_environment_and_name_bad_values(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    from pydantic import ValidationError

    from erasepro_jobs.settings import Settings

    monkeypatch.setenv("ERASEPRO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", "redis://:pw@10.0.0.5:6379/0")
    monkeypatch.setenv("ERASEPRO_BUNDLED", "no")
    monkeypatch.setenv("ERASEPRO_LEASE_TTL_S", "7")
    monkeypatch.setenv("ERASEPRO_DEVICE", "")  # empty = unset
    s = Settings.from_env()
    assert (s.data_dir, s.redis_url, s.include_bundled, s.lease_ttl_s, s.device) == (
        tmp_path, "redis://:pw@10.0.0.5:6379/0", False, 7, None)
    assert s.replace(lease_ttl_s=9).lease_ttl_s == 9 and s.lease_ttl_s == 7  # frozen; replace copies
    with pytest.raises(ValidationError):
        s.replace(lease_ttl_s=1)  # validated like the environment
    monkeypatch.setenv("ERASEPRO_LEASE_TTL_S", "soon")
    with pytest.raises(ValidationError, match="lease_ttl_s"):
        Settings.from_env()
