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

from app.config import REDIS_PREFIX

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


# --------------------------------------------------------------------------------------------- Lua scripts
# Create a record (and its index entry), unless the Idempotency-Key already names a job: then return
# "{id}|{body hash}". KEYS: job, index, idem, active set. ARGV: id, body hash, idem ttl, now, use idem,
# active limit (0: none), field/value pairs. Returns 'limit' when the tenant already has that many queued or
# running jobs (ids of ended or vanished jobs are pruned from the set first).
LUA_CREATE = """
if ARGV[5] == '1' then
  local seen = redis.call('GET', KEYS[3])
  if seen then return seen end
end
local limit = tonumber(ARGV[6])
if limit > 0 then
  if redis.call('SCARD', KEYS[4]) >= limit then
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
      local st = redis.call('HGET', 'erasepro:job:' .. id, 'status')
      if st ~= 'queued' and st ~= 'running' then redis.call('SREM', KEYS[4], id) end
    end
    if redis.call('SCARD', KEYS[4]) >= limit then return 'limit' end
  end
  redis.call('SADD', KEYS[4], ARGV[1])
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[3], ARGV[1] .. '|' .. ARGV[2], 'EX', tonumber(ARGV[3]))
end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if KEYS[2] ~= KEYS[1] then redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[1]) end
return false
"""

# Cancel: a queued job is cancelled at once, a running one is asked to stop (the worker checks the flag).
LUA_CANCEL = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if st == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1], 'cancel_requested', '1',
             'error', 'cancelled before it started')
  redis.call('RPUSH', KEYS[2], 'cancelled')
  redis.call('EXPIRE', KEYS[2], 600)
  return 'cancelled'
end
if st == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  return 'cancelling'
end
return st
"""

# A running job whose lease expired: its worker died. ARGV: outcome, now, field/value pairs.
LUA_LEASE_LOST = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local fields = {'status', ARGV[1], 'finished_at', ARGV[2]}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], 600)
return 1
"""

# Worker: take a queued job. KEYS: job, lease. ARGV: now, worker, lease ttl, then initial field/value pairs
# (used only when the record is missing, e.g. Redis was flushed between enqueue and start).
LUA_START = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then
  local fields = {}
  for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', KEYS[1], unpack(fields))
  st = 'queued'
end
if st ~= 'queued' then return st end
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1], 'worker', ARGV[2])
return 'running'
"""

# Worker: end a running job. KEYS: job, lease, done. ARGV: outcome, now, field/value pairs.
# 'succeeded' is refused (returns the status seen) when cancellation was requested or the job is no longer
# running (its lease was declared lost): the worker then removes what it wrote. 'missing': the record is gone
# (Redis was flushed): nothing is recreated, the manifest on disk is the record.
LUA_FINISH = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if st ~= 'running' then return st end
if ARGV[1] == 'succeeded' and redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  return 'cancel_requested'
end
local fields = {'status', ARGV[1], 'finished_at', ARGV[2]}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], 600)
return 'ok'
"""


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
