"""API keys: each bound to a tenant, stored hashed, checked in constant time.

Keys look like ``ep_<id>_<secret>``; the file ``$ERASEPRO_DATA_DIR/api_keys.json`` keeps, per key, its id,
tenant, SHA-256 and timestamps (never the key itself). ``erasepro keys create|revoke|list`` edits it; the API
re-reads it when it changes, so a revoked key stops working at once. For development and tests,
``ERASEPRO_API_KEYS="tenant:key,..."`` adds keys from the environment (hashed in memory as well).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from erasepro_core.io import write_json_atomic

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
KEY_RE = re.compile(r"^ep_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")
MAX_KEY_CHARS = 512


class KeyStoreError(ValueError):
    """A key-store operation was refused (bad tenant name, unknown key id...)."""


@dataclass(frozen=True)
class KeyRecord:
    """One stored key (hash only)."""

    id: str
    tenant: str
    sha256: str
    created_at: float
    revoked_at: float | None = None
    name: str = ""

    def public(self) -> dict:
        return {"id": self.id, "tenant": self.tenant, "name": self.name, "created_at": self.created_at,
                "revoked_at": self.revoked_at}


def hash_key(key: str) -> str:
    """SHA-256 of the key (keys are 128+ random bits, so a fast hash is the right tool)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_tenant(tenant: str) -> str:
    if not TENANT_RE.match(tenant or ""):
        raise KeyStoreError(f"tenant {tenant!r}: use 1-64 of A-Z a-z 0-9 _ - (starting alphanumeric)")
    return tenant


@dataclass(frozen=True)
class Identity:
    """Who a valid key belongs to: a tenant's key (``tenant`` set) or an admin key (``admin``: its name).
    ``key_id`` names the key in logs and the audit log without revealing it: a file key's id, ``env-`` + the
    first 12 hex digits of an environment key's SHA-256, ``admin-{name}`` for an admin key."""

    key_id: str
    tenant: str | None = None
    admin: str | None = None


def parse_admin_keys(text: str) -> dict[str, str]:
    """``ERASEPRO_ADMIN_KEYS="name:key,..."`` -> ``{sha256(key): name}``; keys shorter than 20 characters are
    refused (an admin key reads every tenant's audit trail)."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, key = item.partition(":")
        if not sep or not TENANT_RE.match(name) or len(key) < 20:
            raise ValueError("ERASEPRO_ADMIN_KEYS entries are 'name:key' (name: 1-64 of A-Z a-z 0-9 _ -; key: 20+ "
                             "characters) separated by commas")
        out[hash_key(key)] = name
    return out


def parse_env_keys(text: str) -> dict[str, str]:
    """``"tenant:key,tenant2:key2"`` -> ``{sha256(key): tenant}``; malformed entries raise ValueError."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        tenant, sep, key = item.partition(":")
        if not sep or not key:
            raise ValueError("ERASEPRO_API_KEYS entries are 'tenant:key' separated by commas")
        check_tenant(tenant)
        out[hash_key(key)] = tenant
    return out


class KeyStore:
    """The hashed key file plus the environment's keys."""

    def __init__(self, path: Path, env_keys: str = "", admin_keys: str = "") -> None:
        self.path = path
        self._env = parse_env_keys(env_keys)
        self._admin = parse_admin_keys(admin_keys)
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._by_id: dict[str, KeyRecord] = {}

    # -- reading ---------------------------------------------------------------------------------------
    def _read_file(self) -> dict[str, KeyRecord]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return {k["id"]: KeyRecord(**k) for k in data.get("keys", [])}

    def _records(self) -> dict[str, KeyRecord]:
        try:
            st = self.path.stat()
            stamp: tuple[float, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._by_id = self._read_file() if stamp else {}
                self._stamp = stamp
            return self._by_id

    def authenticate(self, key: str) -> str | None:
        """The tenant this key belongs to, or ``None`` (unknown, revoked, malformed, or an admin key)."""
        who = self.identify(key)
        return who.tenant if who is not None else None

    def identify(self, key: str) -> Identity | None:
        """Whose key this is (a tenant's or an admin's), or ``None`` (unknown, revoked or malformed)."""
        if not key or len(key) > MAX_KEY_CHARS:
            return None
        digest = hash_key(key)
        found: Identity | None = None
        for h, t in self._env.items():  # constant-time compare against every env key
            if hmac.compare_digest(h, digest):
                found = Identity(key_id=f"env-{h[:12]}", tenant=t)
        for h, name in self._admin.items():
            if hmac.compare_digest(h, digest):
                found = Identity(key_id=f"admin-{name}", admin=name)
        if found is not None:
            return found
        m = KEY_RE.match(key)
        if not m:
            return None
        rec = self._records().get(m.group(1))
        if rec is None or rec.revoked_at is not None or not hmac.compare_digest(rec.sha256, digest):
            return None
        return Identity(key_id=rec.id, tenant=rec.tenant)

    def is_admin(self, key: str) -> bool:
        who = self.identify(key)
        return who is not None and who.admin is not None

    def list(self) -> list[KeyRecord]:
        return sorted(self._records().values(), key=lambda r: r.created_at)

    # -- writing (CLI) ---------------------------------------------------------------------------------
    @contextmanager
    def _locked_file(self) -> Iterator[dict[str, KeyRecord]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_suffix(".lock")
        with open(lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = self._read_file()
            yield records
            payload = {"keys": [vars(r) for r in sorted(records.values(), key=lambda r: r.created_at)]}
            write_json_atomic(self.path, payload, mode=0o600)

    def create(self, tenant: str, name: str = "") -> tuple[str, KeyRecord]:
        """Create a key for ``tenant``; returns ``(key, record)``. The key is shown once and never stored."""
        check_tenant(tenant)
        with self._locked_file() as records:
            key_id = secrets.token_hex(6)
            while key_id in records:
                key_id = secrets.token_hex(6)
            key = f"ep_{key_id}_{secrets.token_urlsafe(32)}"
            rec = KeyRecord(id=key_id, tenant=tenant, sha256=hash_key(key), created_at=time.time(), name=name[:100])
            records[key_id] = rec
        return key, rec

    def revoke(self, key_or_id: str) -> KeyRecord:
        """Revoke by key id (``ep_<id>_...`` keys are accepted too); raises :class:`KeyStoreError` if unknown."""
        m = KEY_RE.match(key_or_id)
        key_id = m.group(1) if m else key_or_id
        with self._locked_file() as records:
            rec = records.get(key_id)
            if rec is None:
                raise KeyStoreError(f"no key with id {key_id!r}")
            if rec.revoked_at is None:
                rec = KeyRecord(**{**vars(rec), "revoked_at": time.time()})
                records[key_id] = rec
        return rec
