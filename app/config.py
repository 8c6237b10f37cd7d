"""Service settings, read from the environment (one place, shared by the API, the worker and the CLI)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REDIS_PREFIX = "erasepro:"
ERASE_QUEUE = "erase"
GENERATE_QUEUE = "generate"
ERASE_FUNC = "worker.jobs.run_erasure"
GENERATE_FUNC = "worker.jobs.run_generation"
EXPORT_FUNC = "worker.jobs.run_export"
EVALUATE_FUNC = "worker.evaluate.run_evaluation"  # on the erase queue, like exports
DELIVER_FUNC = "worker.webhooks.deliver"
WEBHOOK_QUEUE = "webhooks"
# The only functions a worker runs, whatever a Redis client queued (see worker.main.AllowlistedJob).
JOB_FUNCTIONS = frozenset({ERASE_FUNC, GENERATE_FUNC, EXPORT_FUNC, DELIVER_FUNC, EVALUATE_FUNC})


def redact_url(url: str | None) -> str:
    """A Redis URL fit for logs: ``redis://:secret@host:6379/0`` -> ``redis://:***@host:6379/0``."""
    if not url:
        return ""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$ERASEPRO_DATA_DIR``, else ``$XDG_DATA_HOME/erasepro``, else ``~/.local/share/erasepro``."""
    env = os.environ if environ is None else environ
    if env.get("ERASEPRO_DATA_DIR"):
        return Path(env["ERASEPRO_DATA_DIR"]).expanduser()
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "erasepro"


def _int(env: Mapping[str, str], name: str, default: int, lo: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return value


def _tenant_limits(text: str) -> tuple[tuple[str, int], ...]:
    """``"acme:20,globex:2"`` -> ``(("acme", 20), ("globex", 2))``."""
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        tenant, sep, n = item.rpartition(":")
        if not sep or not tenant or not n.isdigit() or int(n) < 1:
            raise ValueError(f"ERASEPRO_TENANT_MAX_ACTIVE entries are 'tenant:N' (N >= 1), got {item!r}")
        out.append((tenant, int(n)))
    return tuple(out)


@dataclass(frozen=True)
class Settings:
    """Every knob of the service. Build with :meth:`from_env`; all durations are in seconds."""

    data_dir: Path
    redis_url: str | None = None
    api_keys_env: str = ""
    base_models_file: Path | None = None
    generate_wait_s: float = 30.0
    erase_timeout_s: int = 3600
    max_erase_timeout_s: int = 6 * 3600
    generate_timeout_s: int = 600
    export_timeout_s: int = 3600
    lease_ttl_s: int = 30
    result_ttl_s: int = 3600
    idempotency_ttl_s: int = 24 * 3600
    max_body_bytes: int = 4 * 1024 * 1024
    cache_size: int = 2
    device: str | None = None
    include_bundled: bool = True
    max_erase_cost: int = 20_000_000
    max_active_jobs: int = 8
    tenant_max_active: tuple[tuple[str, int], ...] = ()
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    hard_timeout_grace_s: int = 60
    webhook_allow_private: bool = False
    webhook_retry_s: int = 3600
    webhook_backoff_s: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        models = env.get("ERASEPRO_BASE_MODELS")
        return cls(
            data_dir=default_data_dir(env),
            redis_url=env.get("REDIS_URL") or None,
            api_keys_env=env.get("ERASEPRO_API_KEYS", ""),
            base_models_file=Path(models).expanduser() if models else None,
            generate_wait_s=_float(env, "ERASEPRO_GENERATE_WAIT_S", 30.0),
            erase_timeout_s=_int(env, "ERASEPRO_ERASE_TIMEOUT_S", 3600, lo=1),
            max_erase_timeout_s=_int(env, "ERASEPRO_MAX_ERASE_TIMEOUT_S", 6 * 3600, lo=1),
            generate_timeout_s=_int(env, "ERASEPRO_GENERATE_TIMEOUT_S", 600, lo=1),
            export_timeout_s=_int(env, "ERASEPRO_EXPORT_TIMEOUT_S", 3600, lo=1),
            lease_ttl_s=_int(env, "ERASEPRO_LEASE_TTL_S", 30, lo=2),
            result_ttl_s=_int(env, "ERASEPRO_RESULT_TTL_S", 3600, lo=1),
            idempotency_ttl_s=_int(env, "ERASEPRO_IDEMPOTENCY_TTL_S", 24 * 3600, lo=1),
            max_body_bytes=_int(env, "ERASEPRO_MAX_BODY_BYTES", 4 * 1024 * 1024, lo=1024),
            cache_size=_int(env, "ERASEPRO_CACHE_SIZE", 2, lo=1),
            device=env.get("ERASEPRO_DEVICE") or None,
            include_bundled=env.get("ERASEPRO_BUNDLED", "1") not in ("0", "false", "no"),
            max_erase_cost=_int(env, "ERASEPRO_MAX_ERASE_COST", 20_000_000, lo=1),
            max_active_jobs=_int(env, "ERASEPRO_MAX_ACTIVE_JOBS", 8, lo=1),
            tenant_max_active=_tenant_limits(env.get("ERASEPRO_TENANT_MAX_ACTIVE", "")),
            header_timeout_s=_float(env, "ERASEPRO_HEADER_TIMEOUT_S", 10.0, lo=0.1),
            body_timeout_s=_float(env, "ERASEPRO_BODY_TIMEOUT_S", 30.0, lo=0.1),
            hard_timeout_grace_s=_int(env, "ERASEPRO_HARD_TIMEOUT_GRACE_S", 60, lo=1),
            webhook_allow_private=env.get("ERASEPRO_WEBHOOK_ALLOW_PRIVATE", "0") in ("1", "true", "yes"),
            webhook_retry_s=min(_int(env, "ERASEPRO_WEBHOOK_RETRY_S", 3600, lo=1), 3600),
            webhook_backoff_s=_float(env, "ERASEPRO_WEBHOOK_BACKOFF_S", 5.0, lo=0.1),
        )

    def active_limit(self, tenant: str) -> int:
        """How many queued + running jobs ``tenant`` may have (``ERASEPRO_TENANT_MAX_ACTIVE`` overrides)."""
        return dict(self.tenant_max_active).get(tenant, self.max_active_jobs)

    @property
    def heartbeat_interval_s(self) -> float:
        """How often a worker refreshes its liveness key and its job's lease (a fifth of the TTL)."""
        return max(0.2, self.lease_ttl_s / 5)

    @property
    def keys_file(self) -> Path:
        """Where the hashed API keys live (created by ``erasepro keys create``)."""
        return self.data_dir / "api_keys.json"

    @property
    def tenants_dir(self) -> Path:
        return self.data_dir / "tenants"
