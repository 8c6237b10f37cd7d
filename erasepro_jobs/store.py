"""Where job state lives: records in Redis (live state) and manifests on disk (the durable record).

Shared by the API (async Redis client) and the worker (sync client); torch-free.

Redis keys (prefix ``erasepro:``)::

    job:{id}                      hash: id, kind, tenant, status, timestamps, progress, report, error, ...
    tenant:{tenant}:erasures      zset: erasure ids scored by creation time (the listing index)
    lease:{id}                    string with a TTL, refreshed by the worker running the job
    idem:{tenant}:{sha256(key)}   "{job id}|{sha256(body)}", with a TTL (Idempotency-Key); removed with its job
    tenant:{tenant}:active        set: the tenant's queued/running job ids (pruned when counted)
    done:{id}                     list pushed once when a job ends (wakes waiting API requests)
    gen:{id}:images               list of base64 PNGs of a finished generation (TTL)
    export:{erasure id}           the id of the job exporting that erasure as a diffusers tar
    workers                       zset: worker name -> last heartbeat (Redis server time)
    running                       set: ids of running jobs (the reaper's list; see erasepro_jobs/lifecycle.py)
    events:{erasure id}           stream: the erasure's event log (durable copy: tenants/{t}/events/{id}.jsonl)
    wh:{erasure id}[:{endpoint}]:… webhook delivery queues, one per (erasure, target) (erasepro_jobs/webhooks.py)
    whep:{endpoint id}            hash: a tenant webhook endpoint (erasepro_jobs/endpoints.py)
    tenant:{tenant}:webhook_endpoints  zset: the tenant's endpoint ids

Disk (``$ERASEPRO_DATA_DIR/tenants/{tenant}/idempotency/{sha256(key)}.json``: the same idempotency record,
so a replay after a Redis flush finds a finished job instead of starting a duplicate;
``$ERASEPRO_DATA_DIR/tenants/{tenant}/erasures/{id}/``): ``delta.safetensors``, optionally
``pipeline.tar``, and ``manifest.json`` (spec, report, base fingerprint, sha256 of every file, timestamps,
tenant). A directory is created under a temporary name and renamed into place complete, so a directory with a
manifest is always a whole checkpoint; the API serves nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from erasepro_jobs.settings import REDIS_PREFIX

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MANIFEST = "manifest.json"
DELTA_FILE = "delta.safetensors"
PIPELINE_TAR = "pipeline.tar"
MANIFEST_FORMAT = "erasepro.checkpoint/1"

TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")


def new_job_id() -> str:
    return uuid.uuid4().hex


def k_job(job_id: str) -> str:
    return f"{REDIS_PREFIX}job:{job_id}"


def k_index(tenant: str) -> str:
    return f"{REDIS_PREFIX}tenant:{tenant}:erasures"


def k_lease(job_id: str) -> str:
    return f"{REDIS_PREFIX}lease:{job_id}"


def k_idem(tenant: str, key: str) -> str:
    return k_idem_hashed(tenant, idem_hash(key))


def k_idem_hashed(tenant: str, digest: str) -> str:
    return f"{REDIS_PREFIX}idem:{tenant}:{digest}"


def idem_path(data_dir: Path, tenant: str, digest: str) -> Path:
    """The durable copy of an idempotency record (see the module docstring)."""
    return tenant_dir(data_dir, tenant) / "idempotency" / f"{digest}.json"


def idem_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def k_active(tenant: str) -> str:
    return f"{REDIS_PREFIX}tenant:{tenant}:active"


def k_done(job_id: str) -> str:
    return f"{REDIS_PREFIX}done:{job_id}"


def k_images(job_id: str) -> str:
    return f"{REDIS_PREFIX}gen:{job_id}:images"


def k_export(erasure_id: str) -> str:
    return f"{REDIS_PREFIX}export:{erasure_id}"


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


def erasures_dir(data_dir: Path, tenant: str) -> Path:
    return tenant_dir(data_dir, tenant) / "erasures"


def erasure_dir(data_dir: Path, tenant: str, job_id: str) -> Path:
    if not JOB_ID_RE.match(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return erasures_dir(data_dir, tenant) / job_id


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def remove_tree(path: Path) -> None:
    """Rename aside, then delete: a half-deleted checkpoint is never visible under its real name."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(path, trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)


class ManifestCache:
    """Parsed manifests keyed by path, re-read when the file changes (listing reads many of them)."""

    def __init__(self, max_entries: int = 10000) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Path, tuple[tuple[int, int], dict]] = {}
        self._max = max_entries

    def read(self, directory: Path) -> dict | None:
        """The manifest of a complete checkpoint directory, or ``None`` (missing, partial or unreadable)."""
        path = directory / MANIFEST
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._entries.get(path)
            if hit and hit[0] == stamp:
                return hit[1]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("id") != directory.name:
            return None
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[path] = (stamp, data)
        return data


def read_manifest(directory: Path) -> dict | None:
    """Uncached :meth:`ManifestCache.read`."""
    return ManifestCache(1).read(directory)


def list_checkpoint_dirs(data_dir: Path, tenant: str) -> list[Path]:
    """The tenant's checkpoint directories that hold a manifest (temporary/trash names are skipped)."""
    root = erasures_dir(data_dir, tenant)
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    return [Path(e.path) for e in entries
            if e.is_dir() and JOB_ID_RE.match(e.name) and os.path.exists(os.path.join(e.path, MANIFEST))]


def now() -> float:
    return time.time()
