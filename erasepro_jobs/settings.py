"""Service settings, read from the environment (one place, shared by the API, the worker and the CLI)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REDIS_PREFIX = "erasepro:"
ERASE_QUEUE = "erase"
GENERATE_QUEUE = "generate"
ERASE_FUNC = "worker.jobs.run_erasure"
GENERATE_FUNC = "worker.jobs.run_generation"
EXPORT_FUNC = "worker.jobs.run_export"
EVALUATE_FUNC = "worker.evaluate.run_evaluation"  # on the heavy queue, like exports
# Evaluations and exports run in their own lane (a worker serving "erase" starts a second process for it), so a
# tenant's hours-long evaluation never holds up anyone's erasure.
HEAVY_QUEUE = "heavy"
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


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/erasepro``, else ``~/.local/share/erasepro``: the data dir when ``ERASEPRO_DATA_DIR`` is
    unset (Settings reads that variable itself)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "erasepro"


def _tenant_limits(text: str) -> tuple[tuple[str, int], ...]:
    """``"acme:20,globex:2"`` -> ``(("acme", 20), ("globex", 2))``."""
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        tenant, sep, n = item.rpartition(":")
        if not sep or not tenant or not n.isdigit() or int(n) < 1:
            raise ValueError(f"ERASEPRO_TENANT_MAX_ACTIVE entries are 'tenant:N' (N >= 1), got {item!r}")
        out.append((tenant, int(n)))
    return tuple(out)


def _flag(value: object) -> bool:
    """Environment flags: ``1/true/yes/on`` and ``0/false/no/off`` (any case); anything else is an error."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a flag (1/0, true/false, yes/no), got {value!r}")


Flag = Annotated[bool, BeforeValidator(_flag)]


def _bytes(value: object) -> object:
    from erasepro_jobs.memory import parse_bytes

    return parse_bytes(value) if isinstance(value, str) else value


def _default_job_memory() -> int:
    from erasepro_jobs.memory import default_job_memory

    return default_job_memory()


def _quota(value: object) -> object:
    """A storage quota: a size (``"20GiB"``), or ``0``/``off``/``none`` for none."""
    if isinstance(value, str) and value.strip().lower() in ("0", "off", "none", "unlimited"):
        return 0
    return _bytes(value)


Bytes = Annotated[int, BeforeValidator(_bytes), Field(ge=1)]
Quota = Annotated[int, BeforeValidator(_quota), Field(ge=0)]
Seconds = Annotated[int, Field(ge=1)]


class Settings(BaseSettings):
    """Every knob of the service, from ``ERASEPRO_<FIELD>`` (``REDIS_URL`` for the broker); durations in seconds.

    Build with ``Settings()`` (or :meth:`from_env`); an unset or empty variable takes the default, a malformed
    one is an error at start that names the variable.
    """

    model_config = SettingsConfigDict(env_prefix="ERASEPRO_", frozen=True, env_ignore_empty=True,
                                      populate_by_name=True, extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    redis_url: str | None = Field(None, validation_alias=AliasChoices("redis_url", "REDIS_URL"))
    api_keys_env: str = Field("", validation_alias=AliasChoices("api_keys_env", "ERASEPRO_API_KEYS"))
    base_models_file: Path | None = Field(None, validation_alias=AliasChoices("base_models_file",
                                                                             "ERASEPRO_BASE_MODELS"))
    generate_wait_s: float = Field(30.0, ge=0)
    erase_timeout_s: Seconds = 3600
    max_erase_timeout_s: Seconds = 6 * 3600
    generate_timeout_s: Seconds = 600
    export_timeout_s: Seconds = 3600
    max_evaluate_timeout_s: Seconds = 3600  # an evaluation's time cap (it may ask for less, never more)
    lease_ttl_s: int = Field(30, ge=2)
    result_ttl_s: Seconds = 3600
    idempotency_ttl_s: Seconds = 24 * 3600
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    cache_size: int = Field(2, ge=1)
    device: str | None = None
    include_bundled: Flag = Field(True, validation_alias=AliasChoices("include_bundled", "ERASEPRO_BUNDLED"))
    max_erase_cost: int = Field(20_000_000, ge=1)
    # the estimated peak memory a job may need (bytes, or "8GiB"), checked at the door and enforced per job
    job_memory: Bytes = Field(default_factory=_default_job_memory)
    job_memory_slack: Bytes = 2**30  # address space a job may reserve above job_memory (stacks, arenas): RLIMIT_AS
    max_active_jobs: int = Field(8, ge=1)
    tenant_max_active: Annotated[tuple[tuple[str, int], ...], NoDecode] = ()
    header_timeout_s: float = Field(10.0, ge=0.1)
    body_timeout_s: float = Field(30.0, ge=0.1)
    hard_timeout_grace_s: Seconds = 60
    webhook_allow_private: Flag = False
    docs: Flag = True  # /docs and /redoc (their pages load swagger-ui/redoc from a CDN); off: 404
    trusted_hosts: str = "*"  # comma-separated Host names the API answers ("*": any); others get 400
    # requests per rate_window_s (0: no limit): per API key; per client address (every /v1 request); and per
    # client address for requests without a valid key (a key-guessing flood)
    rate_limit: int = Field(1200, ge=0)
    rate_limit_address: int = Field(2400, ge=0)
    rate_limit_unauthenticated: int = Field(120, ge=0)
    rate_window_s: Seconds = 60
    webhook_ports: str = "80,443"  # the ports a webhook URL may name; "any" for every port
    webhook_retry_s: int = Field(3600, ge=1, le=3600)  # the retry window is bounded (issue 10)
    webhook_backoff_s: float = Field(5.0, ge=0.1)
    webhook_max_endpoints: int = Field(16, ge=1, le=1000)  # tenant endpoints (/v1/webhook-endpoints) per tenant
    storage_url: str | None = None  # file:///path or s3://bucket/prefix; unset: files under data_dir
    # bytes a tenant may keep in the artifact store (erasepro_jobs.usage): at or past it, new jobs are 429
    tenant_storage: Quota = 20 * 2**30
    export_ttl_s: int = Field(7 * 24 * 3600, ge=0)  # exports (diffusers/lora/kohya tars) are removed after this
    image_ttl_s: int = Field(7 * 24 * 3600, ge=0)  # evaluations' judged images are removed after this (0: kept)
    retention_interval_s: Seconds = 300  # how often one worker sweeps (TTLs, then oldest first over the quota)
    # operations (issue 21): GET /metrics answers a Bearer of this token (or an admin key); unset: 404
    metrics_token: str | None = None
    # "name:key,..." admin keys (GET /v1/audit, /metrics); hashed in memory, never a tenant's
    admin_keys_env: str = Field("", validation_alias=AliasChoices("admin_keys_env", "ERASEPRO_ADMIN_KEYS"))
    audit: Flag = True  # the audit log (erasepro_jobs.audit); off: nothing recorded, GET /v1/audit 404
    audit_flush_s: float = Field(1.0, gt=0, le=60)  # how long an audit line may wait before its segment is stored
    job_attempts: int = Field(2, ge=1, le=10)  # runs a job gets when its worker dies (erasepro_jobs.retry)
    log_format: Literal["text", "json"] = "text"  # json: one JSON object per line with request and job ids
    s3_endpoint_url: str | None = Field(None, validation_alias=AliasChoices(
        "s3_endpoint_url", "ERASEPRO_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"))

    @field_validator("tenant_max_active", mode="before")
    @classmethod
    def _parse_tenant_limits(cls, value: object) -> object:
        return _tenant_limits(value) if isinstance(value, str) else value

    @field_validator("webhook_ports")
    @classmethod
    def _check_ports(cls, value: str) -> str:
        from erasepro_jobs.webhooks import parse_ports

        parse_ports(value)
        return value

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str | None) -> str | None:
        if value:
            from erasepro_jobs.storage import parse_storage_url

            parse_storage_url(value)  # a malformed URL stops the process at start
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"an S3 endpoint is an http(s):// URL, got {value!r}")
        return value

    @field_validator("data_dir", "base_models_file")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @classmethod
    def from_env(cls) -> Settings:
        """The settings of this process's environment (``Settings()``, named for readers of call sites)."""
        return cls()

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated (settings are frozen)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def active_limit(self, tenant: str) -> int:
        """How many queued + running jobs ``tenant`` may have (``ERASEPRO_TENANT_MAX_ACTIVE`` overrides)."""
        return dict(self.tenant_max_active).get(tenant, self.max_active_jobs)

    @property
    def webhook_port_set(self) -> frozenset[int] | None:
        """The ports webhook URLs may name (``None``: any)."""
        from erasepro_jobs.webhooks import parse_ports

        return parse_ports(self.webhook_ports)

    @property
    def heartbeat_interval_s(self) -> float:
        """How often a worker refreshes its liveness key and its job's lease (a fifth of the TTL)."""
        return max(0.2, self.lease_ttl_s / 5)

    @property
    def keys_file(self) -> Path:
        """Where the hashed API keys live (created by ``erasepro keys create``)."""
        return self.data_dir / "api_keys.json"
