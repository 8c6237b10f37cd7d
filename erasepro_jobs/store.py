"""Where job state lives: records in Redis (live state) and manifests on disk (the durable record).

Shared by the API (async Redis client) and the worker (sync client); torch-free.

Redis keys (prefix ``erasepro:``)::

    job:{id}                      hash: id, kind, tenant, status, timestamps, progress, report, error, ...
    tenant:{tenant}:erasures      zset: erasure ids scored by creation time (the listing index)
    tenant:{tenant}:erasures:indexed  marker: the index holds every checkpoint in the artifact store (see
                                  below); a flush removes it with the index, and the next listing rebuilds once
    tenant:{tenant}:erasures:reindex  lock (with a TTL) held while one API process rebuilds the index
    tenant:{tenant}:erasures:rebuild  zset: the rebuild's scratch copy, merged into the index when it is done
    lease:{id}                    string with a TTL, refreshed by the worker running the job
    idem:{tenant}:{sha256(key)}   "{job id}|{sha256(body)}", with a TTL (Idempotency-Key); removed with its job
    tenant:{tenant}:active        set: the tenant's queued/running job ids (pruned when counted)
    done:{id}                     list pushed once when a job ends (wakes waiting API requests)
    gen:{id}:images               list of base64 PNGs of a finished generation (TTL)
    export:{erasure id}[:{fmt}]   the id of the job exporting that erasure as a diffusers (lora, kohya) tar
    workers                       zset: worker name -> last heartbeat (Redis server time)
    running                       set: ids of running jobs (the reaper's list; see erasepro_jobs/lifecycle.py)
    events:{erasure id}           stream: the erasure's event log (durable copy: tenants/{t}/events/{id}/ in the store)
    wh:{erasure id}[:{endpoint}]:… webhook delivery queues, one per (erasure, target) (erasepro_jobs/webhooks.py)
    whep:{endpoint id}            hash: a tenant webhook endpoint (erasepro_jobs/endpoints.py)
    tenant:{tenant}:webhook_endpoints  zset: the tenant's endpoint ids

The artifact store, key ``tenants/{tenant}/idempotency/{sha256(key)}.json`` (under ``$ERASEPRO_DATA_DIR`` by
default): the same idempotency record, so a replay after a Redis flush finds a finished job instead of starting
a duplicate.

The artifact store (:mod:`erasepro_jobs.storage`: the data dir by default, or S3), keys
``tenants/{tenant}/erasures/{id}/``: ``delta.safetensors``, optionally ``pipeline.tar``, ``lora.tar`` and
``kohya.tar`` (exported on demand, each with a model card), and ``manifest.json``
(spec, report, base fingerprint, sha256 of every file, timestamps, tenant), written last: a checkpoint with a
manifest is always complete; the API serves nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from erasepro_jobs.settings import REDIS_PREFIX
from erasepro_jobs.storage import ObjectInfo, ObjectNotFound, Storage

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MANIFEST = "manifest.json"
DELTA_FILE = "delta.safetensors"
PIPELINE_TAR = "pipeline.tar"
# The files an export job writes, per checkpoint format (``delta`` is written by the erasure itself).
EXPORT_FILES = {"diffusers": PIPELINE_TAR, "lora": "lora.tar", "kohya": "kohya.tar"}
MANIFEST_FORMAT = "erasepro.checkpoint/1"

TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")


def new_job_id() -> str:
    return uuid.uuid4().hex


def k_job(job_id: str) -> str:
    return f"{REDIS_PREFIX}job:{job_id}"


def k_index(tenant: str) -> str:
    return f"{REDIS_PREFIX}tenant:{tenant}:erasures"


def k_indexed(tenant: str) -> str:
    """The marker that the tenant's index was rebuilt from the artifact store since Redis last lost it."""
    return f"{REDIS_PREFIX}tenant:{tenant}:erasures:indexed"


def k_reindex_lock(tenant: str) -> str:
    return f"{REDIS_PREFIX}tenant:{tenant}:erasures:reindex"


def k_reindex_scratch(tenant: str) -> str:
    return f"{REDIS_PREFIX}tenant:{tenant}:erasures:rebuild"


def k_lease(job_id: str) -> str:
    return f"{REDIS_PREFIX}lease:{job_id}"


def k_idem(tenant: str, key: str) -> str:
    return k_idem_hashed(tenant, idem_hash(key))


def k_idem_hashed(tenant: str, digest: str) -> str:
    return f"{REDIS_PREFIX}idem:{tenant}:{digest}"


def idem_object(tenant: str, digest: str) -> str:
    """The artifact-store key of an idempotency record's durable copy (see the module docstring)."""
    return f"tenants/{tenant}/idempotency/{digest}.json"


def idem_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def k_active(tenant: str) -> str:
    return f"{REDIS_PREFIX}tenant:{tenant}:active"


def k_done(job_id: str) -> str:
    return f"{REDIS_PREFIX}done:{job_id}"


def k_images(job_id: str) -> str:
    return f"{REDIS_PREFIX}gen:{job_id}:images"


def k_export(erasure_id: str, fmt: str = "diffusers") -> str:
    """The pointer to the job exporting ``erasure_id`` as ``fmt`` (the diffusers one keeps its original name)."""
    return f"{REDIS_PREFIX}export:{erasure_id}" + ("" if fmt == "diffusers" else f":{fmt}")


K_WORKERS = f"{REDIS_PREFIX}workers"


def iso(ts: float | str | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC (``None`` stays ``None``)."""
    if ts in (None, ""):
        return None
    return datetime.fromtimestamp(float(ts), tz=UTC).isoformat().replace("+00:00", "Z")


# The transitions (Lua scripts that change a job's status) live in erasepro_jobs/lifecycle.py.


def flatten(fields: dict[str, Any]) -> list[str]:
    """``{k: v}`` -> ``[k, str(v), ...]`` with dicts/lists as JSON, ``None`` skipped."""
    out: list[str] = []
    for k, v in fields.items():
        if v is None:
            continue
        out += [k, json.dumps(v, separators=(",", ":")) if isinstance(v, dict | list) else str(v)]
    return out


# ------------------------------------------------------------------------------------------------- disk
def tenant_dir(data_dir: Path, tenant: str) -> Path:
    return data_dir / "tenants" / tenant


# ------------------------------------------------------------------------------------- checkpoints
# A checkpoint is the objects under ``tenants/{tenant}/erasures/{id}/`` in the artifact store
# (erasepro_jobs.storage). ``manifest.json`` is written last and removed first: a checkpoint whose manifest
# exists is complete, and nothing without one is ever served.
def checkpoint_prefix(tenant: str, job_id: str) -> str:
    if not JOB_ID_RE.match(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return f"tenants/{tenant}/erasures/{job_id}"


def checkpoint_key(tenant: str, job_id: str, name: str) -> str:
    return f"{checkpoint_prefix(tenant, job_id)}/{name}"


def k_checkpoint_lock(job_id: str) -> str:
    """The Redis lock around a checkpoint's manifest read-modify-write (export, evaluation) and its deletion."""
    return f"{REDIS_PREFIX}lock:checkpoint:{job_id}"


CHECKPOINT_LOCK_TTL_S = 120  # a lock holder that dies releases it after this; the critical sections take ms


class ManifestCache:
    """Parsed manifests keyed by storage key, re-read when the object's version changes (listing reads many)."""

    def __init__(self, max_entries: int = 10000) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, dict]] = {}
        self._max = max_entries

    def read(self, storage: Storage, tenant: str, job_id: str, info: ObjectInfo | None = None) -> dict | None:
        """The manifest of a complete checkpoint, or ``None`` (missing or unreadable); ``info`` (from a listing)
        saves the stat. Raises :class:`~erasepro_jobs.storage.StorageError` when the store is unreachable."""
        key = checkpoint_key(tenant, job_id, MANIFEST)
        if info is None:
            try:
                info = storage.stat(key, checksum=False)
            except ObjectNotFound:
                return None
        with self._lock:
            hit = self._entries.get(key)
            if hit and hit[0] == info.version:
                return hit[1]
        try:
            data = json.loads(storage.get_bytes(key))
        except ObjectNotFound:
            return None
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("id") != job_id:
            return None
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key] = (info.version, data)
        return data


def read_manifest(storage: Storage, tenant: str, job_id: str) -> dict | None:
    """Uncached :meth:`ManifestCache.read`."""
    return ManifestCache(1).read(storage, tenant, job_id)


def write_idem_record(storage: Storage, tenant: str, digest: str, record: dict[str, Any]) -> None:
    storage.put_bytes(idem_object(tenant, digest), json.dumps(record).encode("utf-8"))


def read_idem_record(storage: Storage, tenant: str, digest: str) -> dict[str, Any] | None:
    """The durable idempotency record, or ``None`` (none, unreadable, not a JSON object)."""
    try:
        data = json.loads(storage.get_bytes(idem_object(tenant, digest), limit=1 << 16))
    except (ObjectNotFound, ValueError):  # an unreachable store raises (503), never "no record"
        return None
    return data if isinstance(data, dict) else None


def write_manifest(storage: Storage, tenant: str, job_id: str, manifest: dict) -> None:
    storage.put_bytes(checkpoint_key(tenant, job_id, MANIFEST),
                      json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8"))


def list_checkpoints(storage: Storage, tenant: str) -> dict[str, ObjectInfo]:
    """The tenant's checkpoints that hold a manifest: erasure id -> the manifest object's info."""
    out: dict[str, ObjectInfo] = {}
    for info in storage.list(f"tenants/{tenant}/erasures"):
        parts = info.key.split("/")
        if len(parts) == 5 and parts[4] == MANIFEST and JOB_ID_RE.match(parts[3]):
            out[parts[3]] = info
    return out


def delete_checkpoint(storage: Storage, tenant: str, job_id: str) -> None:
    """Manifest first (the checkpoint stops being served at once), then every other object under it."""
    storage.delete(checkpoint_key(tenant, job_id, MANIFEST))
    storage.delete_prefix(checkpoint_prefix(tenant, job_id))


def now() -> float:
    return time.time()
