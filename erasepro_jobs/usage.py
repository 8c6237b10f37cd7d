"""What each tenant keeps in the artifact store, its storage quota, and the retention of exports and images.

Usage is the artifact store's own listing under ``tenants/{tenant}/`` (files or S3 alike), summed by kind:

* ``checkpoints``: an erasure's delta, manifest and guard files (``erasures/{id}/…``);
* ``exports``: the diffusers/LoRA/kohya tars exported on demand (``erasures/{id}/{pipeline,lora,kohya}.tar``);
* ``images``: the judged before/after images of image-judge evaluations (``erasures/{id}/evaluations/…``);
* ``other``: event logs and idempotency records.

**Quota** (``ERASEPRO_TENANT_STORAGE``, bytes or ``20GiB``; ``off``): a tenant whose usage U has reached its quota
Q (U ≥ Q) gets ``429`` for every new erasure, generation, export and evaluation (:class:`QuotaExceeded` names U
and Q). A job already admitted may carry U past Q by at most what it writes; retention brings U back.

**Retention** (:class:`Retention`, swept by one worker per ``ERASEPRO_RETENTION_INTERVAL_S``): exports and images
are derived data (an export is rebuilt from its delta on the next request), so they are what retention removes,
never a checkpoint. Per tenant, with ages a = now − the object's write time:

1. every export with a > ``ERASEPRO_EXPORT_TTL_S`` and every image with a > ``ERASEPRO_IMAGE_TTL_S`` (0: no TTL);
2. then, while U > Q, the remaining exports and images oldest first (so U ≤ Q afterwards whenever the
   checkpoints alone fit).

An export is removed from its manifest first, under the checkpoint's lock (the API stops serving it at once and
the next request exports again), then from the store; an export still being written (not in its manifest yet)
is never removed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import redis

from erasepro_jobs import store
from erasepro_jobs.memory import format_bytes
from erasepro_jobs.settings import REDIS_PREFIX, Settings
from erasepro_jobs.storage import ObjectInfo, Storage

log = logging.getLogger("erasepro.retention")

Kind = Literal["checkpoints", "exports", "images", "other"]
KINDS: tuple[Kind, ...] = ("checkpoints", "exports", "images", "other")
EVICTABLE: tuple[Kind, ...] = ("exports", "images")
K_SWEPT = f"{REDIS_PREFIX}retention:swept"  # held for retention_interval_s by the process that sweeps
_EXPORT_FORMATS = {name: fmt for fmt, name in store.EXPORT_FILES.items()}


def classify(key: str) -> tuple[str, Kind] | None:
    """``tenants/{t}/…`` -> ``(t, kind)``; ``None`` for keys outside a tenant's folder (the audit log)."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != "tenants":
        return None
    tenant = parts[1]
    if parts[2] == "erasures" and len(parts) >= 5:
        if len(parts) == 5 and parts[4] in _EXPORT_FORMATS:
            return tenant, "exports"
        if parts[4] == "evaluations":
            return tenant, "images"
        return tenant, "checkpoints"
    return tenant, "other"


@dataclass
class Usage:
    """One tenant's bytes by kind, and the objects retention may remove (exports and images)."""

    by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    evictable: list[tuple[Kind, ObjectInfo]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def add(self, kind: Kind, info: ObjectInfo) -> None:
        self.by_kind[kind] += info.size
        if kind in EVICTABLE:
            self.evictable.append((kind, info))


def usage_by_tenant(storage: Storage, tenant: str | None = None) -> dict[str, Usage]:
    """Every tenant's :class:`Usage` (one listing of ``tenants/``), or only ``tenant``'s."""
    out: dict[str, Usage] = {}
    for info in storage.list(f"tenants/{tenant}" if tenant else "tenants"):
        found = classify(info.key)
        if found is not None:
            out.setdefault(found[0], Usage()).add(found[1], info)
    return out


def tenant_usage(storage: Storage, tenant: str) -> Usage:
    return usage_by_tenant(storage, tenant).get(tenant) or Usage()


class QuotaExceeded(Exception):
    """The tenant stores its quota or more: new work that writes to the store is refused."""

    def __init__(self, used: int, quota: int) -> None:
        self.used, self.quota = used, quota
        super().__init__(
            f"storage quota exceeded: this tenant stores {format_bytes(used)} ({used} bytes), its quota is "
            f"{format_bytes(quota)} ({quota} bytes, ERASEPRO_TENANT_STORAGE); delete erasures you no longer need, "
            "or wait for old exports and images to expire (GET /v1/usage shows what is stored)")


def check_quota(storage: Storage, tenant: str, quota: int) -> Usage:
    """The tenant's usage, or :class:`QuotaExceeded` when it has reached ``quota`` (0: no quota)."""
    used = tenant_usage(storage, tenant)
    if quota and used.total >= quota:
        raise QuotaExceeded(used.total, quota)
    return used


# --------------------------------------------------------------------------------------------- retention
class Retention:
    """The sweep described in the module docstring, over one Redis client (locks) and the artifact store."""

    def __init__(self, r: redis.Redis, storage: Storage, settings: Settings) -> None:
        self.r, self.storage, self.settings = r, storage, settings

    def sweep_if_due(self) -> int:
        """Sweep when no process has in the last ``retention_interval_s`` (a Redis key, shared by every worker);
        returns how many objects were removed."""
        if not self.r.set(K_SWEPT, str(store.now()), nx=True, ex=self.settings.retention_interval_s):
            return 0
        return len(self.sweep())

    def victims(self, usage: Usage, now: float) -> list[tuple[Kind, ObjectInfo]]:
        """What to remove of one tenant: expired first, then oldest first while over the quota."""
        ttl = {"exports": self.settings.export_ttl_s, "images": self.settings.image_ttl_s}
        out: list[tuple[Kind, ObjectInfo]] = []
        rest: list[tuple[Kind, ObjectInfo]] = []
        for kind, info in usage.evictable:
            age = now - info.modified if info.modified is not None else 0.0
            (out if ttl[kind] and age > ttl[kind] else rest).append((kind, info))
        left = usage.total - sum(i.size for _, i in out)
        quota = self.settings.tenant_storage
        if quota and left > quota:
            for kind, info in sorted(rest, key=lambda ki: (ki[1].modified or 0.0, ki[1].key)):
                if left <= quota:
                    break
                out.append((kind, info))
                left -= info.size
        return out

    def sweep(self, now: float | None = None) -> list[str]:
        """One pass over every tenant; returns the keys removed (logged, one line per tenant)."""
        now = store.now() if now is None else now
        removed: list[str] = []
        for tenant, usage in usage_by_tenant(self.storage).items():
            gone = [info.key for kind, info in self.victims(usage, now) if self._remove(tenant, kind, info)]
            if gone:
                log.info("retention: removed %d objects of tenant %s (%s)", len(gone), tenant,
                         format_bytes(sum(i.size for _, i in usage.evictable if i.key in set(gone))))
            removed += gone
        return removed

    def _remove(self, tenant: str, kind: Kind, info: ObjectInfo) -> bool:
        if kind == "images":
            return self.storage.delete(info.key)
        erasure_id, name = info.key.split("/")[3:5]
        lock = self.r.lock(store.k_checkpoint_lock(erasure_id), timeout=store.CHECKPOINT_LOCK_TTL_S,
                           blocking_timeout=5)
        if not lock.acquire():
            return False  # busy (an export or evaluation is writing the manifest): the next sweep
        try:
            manifest = store.read_manifest(self.storage, tenant, erasure_id)
            if manifest is None or name not in (manifest.get("files") or {}):
                return False  # still being written, or an orphan the worker's cleanup removes
            manifest["files"].pop(name)
            store.write_manifest(self.storage, tenant, erasure_id, manifest)
            self.r.delete(store.k_export(erasure_id, _EXPORT_FORMATS[name]))
            self.storage.delete(info.key)
        finally:
            try:
                lock.release()
            except redis.RedisError as exc:
                log.warning("checkpoint lock of %s: %s", erasure_id, exc)
        return True


def usage_view(usage: Usage, quota: int, active: dict[str, int], active_limit: int,
               settings: Settings) -> dict[str, object]:
    """``GET /v1/usage``'s body (see app.schemas.UsageView)."""
    return {
        "storage": {"used_bytes": usage.total, "quota_bytes": quota or None, "by_kind": dict(usage.by_kind)},
        "jobs": {"active": sum(active.values()), "limit": active_limit, "by_kind": active},
        "retention": {"export_ttl_s": settings.export_ttl_s or None, "image_ttl_s": settings.image_ttl_s or None},
    }
