"""Tenant webhook endpoints: URLs a tenant registers once (``/v1/webhook-endpoints``) that receive the events of
all its erasures, each signed with the endpoint's own secret.

Records live in Redis (shared by the API, which manages them, and the workers, which deliver to them)::

    whep:{endpoint id}                 hash: id, tenant, url, events (JSON list, '' = all), description, enabled,
                                       secret, previous_secret, previous_expires_at, created_at, updated_at
    tenant:{tenant}:webhook_endpoints  zset: the tenant's endpoint ids scored by creation time

Every change is one Lua script that checks the endpoint belongs to the caller's tenant (another tenant's
endpoint is "not found"), so a delete racing an update never resurrects a half record, and the count limit
holds under concurrent creates.

Secret rotation keeps the previous secret valid for a grace period: deliveries then carry two signatures in
``webhook-signature`` (space-separated, as Standard Webhooks allows), the new one first, so a receiver that
still has the old secret keeps verifying until it switches.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from erasepro_jobs import store
from erasepro_jobs.settings import REDIS_PREFIX
from erasepro_jobs.webhooks import new_secret

ENDPOINT_ID_RE = re.compile(r"^we_[0-9a-f]{32}$")
MAX_DESCRIPTION = 500
DEFAULT_ROTATION_GRACE_S = 24 * 3600  # as Svix: the old secret keeps verifying for a day
MAX_ROTATION_GRACE_S = 7 * 24 * 3600


def new_endpoint_id() -> str:
    return "we_" + uuid.uuid4().hex


def k_endpoint(endpoint_id: str) -> str:
    return f"{REDIS_PREFIX}whep:{endpoint_id}"


def k_tenant_endpoints(tenant: str) -> str:
    return f"{REDIS_PREFIX}tenant:{tenant}:webhook_endpoints"


class EndpointLimit(Exception):
    """The tenant already has as many endpoints as the server allows."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"this tenant already has {limit} webhook endpoints (the server's limit); delete one first")


@dataclass(frozen=True)
class Endpoint:
    """One registered endpoint, as stored (secrets included: never hand this to a response as is)."""

    id: str
    tenant: str
    url: str
    events: tuple[str, ...] | None  # None: every event type
    description: str
    enabled: bool
    secret: str
    previous_secret: str
    previous_expires_at: float
    created_at: float
    updated_at: float

    @classmethod
    def from_record(cls, rec: dict[str, str]) -> Endpoint:
        events = json.loads(rec["events"]) if rec.get("events") else None
        return cls(id=rec["id"], tenant=rec["tenant"], url=rec["url"],
                   events=tuple(events) if events else None, description=rec.get("description", ""),
                   enabled=rec.get("enabled") == "1", secret=rec["secret"],
                   previous_secret=rec.get("previous_secret", ""),
                   previous_expires_at=float(rec.get("previous_expires_at") or 0.0),
                   created_at=float(rec.get("created_at") or 0.0), updated_at=float(rec.get("updated_at") or 0.0))

    def takes(self, event_type: str) -> bool:
        """Whether this endpoint receives events of ``event_type`` (enabled and its filter allows it)."""
        return self.enabled and (self.events is None or event_type in self.events)

    def signing_secrets(self, now: float) -> list[str]:
        """The secrets a delivery is signed with now: the current one, then the previous one during its grace."""
        if self.previous_secret and now < self.previous_expires_at:
            return [self.secret, self.previous_secret]
        return [self.secret]

    def view(self) -> dict[str, Any]:
        """The public view: everything but the secrets."""
        grace = self.previous_secret and self.previous_expires_at > store.now()
        return {"id": self.id, "url": self.url, "events": list(self.events) if self.events else None,
                "description": self.description, "enabled": self.enabled,
                "created_at": store.iso(self.created_at), "updated_at": store.iso(self.updated_at),
                "previous_secret_expires_at": store.iso(self.previous_expires_at) if grace else None}


# KEYS: endpoint, tenant index. ARGV: id, limit, created_at, then field/value pairs. Returns 1, or 0 at the limit.
_CREATE = """
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 0 end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[1])
return 1
"""

# KEYS: endpoint. ARGV: tenant, then field/value pairs. Returns 1, or 0 when it is not the tenant's.
_UPDATE = """
if redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[1] then return 0 end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
return 1
"""

# KEYS: endpoint. ARGV: tenant, new secret, previous secret's expiry (0: none), now. The current secret becomes
# the previous one (a rotation during a grace period ends the older secret's grace at once).
_ROTATE = """
if redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[1] then return 0 end
local old = redis.call('HGET', KEYS[1], 'secret')
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', KEYS[1], 'previous_secret', old, 'previous_expires_at', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'previous_secret', '', 'previous_expires_at', '0')
end
redis.call('HSET', KEYS[1], 'secret', ARGV[2], 'updated_at', ARGV[4])
return 1
"""

# KEYS: endpoint, tenant index. ARGV: tenant, id. Returns 1, or 0 when it is not the tenant's.
_DELETE = """
if redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""


class Endpoints:
    """The tenant endpoints over a sync Redis client (``decode_responses=True``); the API calls it in a thread."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self._create = r.register_script(_CREATE)
        self._update = r.register_script(_UPDATE)
        self._rotate = r.register_script(_ROTATE)
        self._delete = r.register_script(_DELETE)

    def create(self, tenant: str, *, url: str, events: list[str] | None, description: str, enabled: bool,
               limit: int) -> Endpoint:
        """A new endpoint with a fresh secret; :class:`EndpointLimit` when the tenant has ``limit`` already."""
        eid, at = new_endpoint_id(), store.now()
        fields = {"id": eid, "tenant": tenant, "url": url, "events": _events(events), "description": description,
                  "enabled": "1" if enabled else "0", "secret": new_secret(), "previous_secret": "",
                  "previous_expires_at": "0", "created_at": repr(at), "updated_at": repr(at)}
        if not self._create(keys=[k_endpoint(eid), k_tenant_endpoints(tenant)],
                            args=[eid, limit, repr(at), *store.flatten(fields)]):
            raise EndpointLimit(limit)
        return Endpoint.from_record(fields)

    def get(self, tenant: str, endpoint_id: str) -> Endpoint | None:
        """The tenant's endpoint, or ``None`` (no such id, or another tenant's)."""
        ep = self.load(endpoint_id)
        return ep if ep is not None and ep.tenant == tenant else None

    def load(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint whatever its tenant (the delivery side checks the tenant itself)."""
        if not ENDPOINT_ID_RE.match(endpoint_id):
            return None
        rec = self.r.hgetall(k_endpoint(endpoint_id))
        return Endpoint.from_record(rec) if rec.get("id") == endpoint_id else None

    def all(self, tenant: str) -> list[Endpoint]:
        """The tenant's endpoints, oldest first (the count is bounded by the server's limit)."""
        ids = self.r.zrange(k_tenant_endpoints(tenant), 0, -1)
        if not ids:
            return []
        with self.r.pipeline(transaction=False) as p:
            for eid in ids:
                p.hgetall(k_endpoint(eid))
            recs = p.execute()
        return [Endpoint.from_record(rec) for rec in recs if rec.get("tenant") == tenant]

    def for_event(self, tenant: str, event_type: str) -> list[Endpoint]:
        """The tenant's endpoints that receive an event of ``event_type`` now."""
        return [ep for ep in self.all(tenant) if ep.takes(event_type)]

    def update(self, tenant: str, endpoint_id: str, changes: dict[str, Any]) -> Endpoint | None:
        """Apply ``changes`` (``url``, ``events`` (None: all), ``description``, ``enabled``); ``None``: not found."""
        if not ENDPOINT_ID_RE.match(endpoint_id):
            return None
        fields: dict[str, str] = {"updated_at": repr(store.now())}
        for name, value in changes.items():
            if name == "events":
                fields["events"] = _events(value)
            elif name == "enabled":
                fields["enabled"] = "1" if value else "0"
            elif name in ("url", "description"):
                fields[name] = str(value)
            else:
                raise ValueError(f"not a changeable field: {name!r}")
        if not self._update(keys=[k_endpoint(endpoint_id)], args=[tenant, *store.flatten(fields)]):
            return None
        return self.get(tenant, endpoint_id)

    def rotate(self, tenant: str, endpoint_id: str, grace_s: int) -> Endpoint | None:
        """A new secret; the current one stays valid for ``grace_s`` seconds (0: revoked at once)."""
        if not ENDPOINT_ID_RE.match(endpoint_id):
            return None
        at = store.now()
        expires = at + grace_s if grace_s > 0 else 0.0
        if not self._rotate(keys=[k_endpoint(endpoint_id)], args=[tenant, new_secret(), repr(expires), repr(at)]):
            return None
        return self.get(tenant, endpoint_id)

    def delete(self, tenant: str, endpoint_id: str) -> bool:
        """Remove the endpoint; deliveries still queued for it are dropped when their turn comes."""
        if not ENDPOINT_ID_RE.match(endpoint_id):
            return False
        return bool(self._delete(keys=[k_endpoint(endpoint_id), k_tenant_endpoints(tenant)],
                                 args=[tenant, endpoint_id]))


def _events(events: list[str] | tuple[str, ...] | None) -> str:
    """The stored filter: a JSON list without repeats, or '' for every event type."""
    return json.dumps(list(dict.fromkeys(events)), separators=(",", ":")) if events else ""
