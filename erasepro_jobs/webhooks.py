"""Webhooks, the torch-free half: Standard Webhooks signing, the target check (and the pinned address a delivery
connects to), and the per-(erasure, target) delivery queues.

Signature (https://www.standardwebhooks.com): ``webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.
{body}"))>`` where ``key`` is the base64 part of the ``whsec_…`` secret; ``webhook-id`` is the event id (the same
on every retry, so receivers can drop duplicates) and ``webhook-timestamp`` the attempt's Unix time.

Targets: the erasure's own ``webhook`` (target ``"webhook"``) and each of its tenant's endpoints (target: the
endpoint id, see :mod:`erasepro_jobs.endpoints`). Each (erasure, target) pair is a *channel* with its own queue.

Order: a channel's deliveries wait in one Redis list and one delivery job at a time (holding the channel's lock)
sends them oldest first, so a receiver sees them in event order even across retries. A retry is a due time in
``wh:due``; every worker's heartbeat thread enqueues the delivery jobs that are due (no separate scheduler
process).

DNS rebinding: the delivery resolves the host itself, refuses non-public addresses (unless allowed), and connects
to the address it checked (the URL's host stays in ``Host`` and in TLS's SNI and certificate check), so a name
that answers a public address to the check and a private one to the connection cannot steer a delivery inside.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from erasepro_jobs.settings import DELIVER_FUNC, REDIS_PREFIX, WEBHOOK_QUEUE

__all__ = ["DELIVER_FUNC", "WEBHOOK_QUEUE"]
SECRET_PREFIX = "whsec_"
MAX_DELIVERY_LOG = 500
MAX_URL = 2048
MAX_RETRY_S = 3600  # the longest ERASEPRO_WEBHOOK_RETRY_S
LOCK_TTL_S = MAX_RETRY_S + 1200  # a delivery job's lock outlives its longest backoff; a dead job's expires


JOB_TARGET = "webhook"  # the erasure's own webhook; any other target is an endpoint id

K_DUE = f"{REDIS_PREFIX}wh:due"  # zset: channel -> when its delivery job is due again (a retry's backoff)


def channel(subject: str, target: str = JOB_TARGET) -> str:
    """The queue name of one (erasure, target) pair: the erasure id for its own webhook, ``{id}:{endpoint}``
    for an endpoint (so the job webhook's keys are what they were before endpoints existed)."""
    return subject if target == JOB_TARGET else f"{subject}:{target}"


def split_channel(name: str) -> tuple[str, str]:
    """:func:`channel`'s inverse: ``(subject, target)``."""
    subject, _, target = name.partition(":")
    return subject, target or JOB_TARGET


def k_pending(chan: str) -> str:
    return f"{REDIS_PREFIX}wh:{chan}:pending"


def k_lock(chan: str) -> str:
    return f"{REDIS_PREFIX}wh:{chan}:lock"


def k_attempts(chan: str) -> str:
    return f"{REDIS_PREFIX}wh:{chan}:attempts"


def k_targets(subject: str) -> str:
    """set: the targets that ever had a queue for this erasure (so deleting the erasure finds them all)."""
    return f"{REDIS_PREFIX}wh:{subject}:targets"


def k_deliveries(subject: str) -> str:
    """list: every attempt for the erasure, all targets together (``GET /v1/erasures/{id}/deliveries``)."""
    return f"{REDIS_PREFIX}wh:{subject}:deliveries"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,`` + base64 HMAC-SHA256 over ``"{msg_id}.{timestamp}.{body}"`` keyed by the secret's decoded bytes."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature``: one ``v1,…`` per secret, space-separated (a rotated endpoint's grace period)."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_)


class Unresolved(str):
    """Why a host did not resolve: perhaps only for now, so a delivery retries it (the door refuses it)."""


@dataclass(frozen=True)
class Target:
    """A checked delivery target: the URL as given and the address it resolved to (what to connect to)."""

    url: str
    ip: str


def resolve_target(url: str, allow_private: bool) -> Target | str:
    """The :class:`Target` of ``url``, or why it may not receive webhooks. Loopback, private, link-local,
    reserved and multicast addresses are refused unless ``allow_private``; every address the host resolves to is
    checked, and the first is the one to connect to."""
    if len(url) > MAX_URL:
        return f"at most {MAX_URL} characters"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username or parts.password:
        return "must not carry credentials"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        return Unresolved(f"host does not resolve ({exc})")
    if not infos:
        return Unresolved("host does not resolve")
    ips = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
    if not allow_private:
        for ip in ips:
            if (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast
                    or ip.is_unspecified):
                return f"{parts.hostname} resolves to a non-public address ({ip}); not allowed on this server"
    return Target(url, str(ips[0]))


def check_target(url: str, allow_private: bool) -> str | None:
    """Why ``url`` may not receive webhooks (``None``: it may); see :func:`resolve_target`."""
    found = resolve_target(url, allow_private)
    return found if isinstance(found, str) else None


def post_pinned(target: Target, body: bytes, headers: dict[str, str], timeout_s: float,
                verify: ssl.SSLContext | bool = True) -> httpx.Response:
    """POST to ``target.ip`` (no second lookup), with the URL's host in ``Host`` and in TLS (SNI and the
    certificate's name); redirects are not followed and proxies from the environment are ignored. ``verify``:
    httpx's (the system's trust store by default)."""
    parts = urlsplit(target.url)
    ip = ipaddress.ip_address(target.ip)
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = f"{host}:{parts.port}" if parts.port else host
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = parts.netloc.rpartition("@")[2]
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False, verify=verify) as client:
        request = client.build_request("POST", pinned, content=body, headers={**headers, "host": host_header},
                                       extensions=extensions)
        return client.send(request)


def payload(event: dict[str, Any], erasure_id: str) -> bytes:
    """The body: ``{"type", "timestamp", "data"}`` (Standard Webhooks' shape) with the event in ``data``."""
    return json.dumps({"type": event["type"], "timestamp": event["created_at"],
                       "data": {"erasure_id": erasure_id, "event_id": event["id"], **(event.get("data") or {})}},
                      separators=(",", ":")).encode()


# Queue an event on each target's channel (one call for all of an event's targets); returns the targets whose
# lock it took (no delivery job was running for them: the caller enqueues one each).
# KEYS: the erasure's targets set, then pending and lock of each channel. ARGV: event JSON, lock ttl, targets.
LUA_PUSH = """
local started = {}
for i = 3, #ARGV do
  local pending, lock = KEYS[2 * (i - 2)], KEYS[2 * (i - 2) + 1]
  redis.call('RPUSH', pending, ARGV[1])
  redis.call('SADD', KEYS[1], ARGV[i])
  if redis.call('SET', lock, '1', 'NX', 'EX', tonumber(ARGV[2])) then started[#started + 1] = ARGV[i] end
end
return started
"""

# The head was handled: drop it; release the lock when nothing is left (atomic with LUA_PUSH, so an event
# pushed meanwhile is never stranded). KEYS: pending, lock. Returns how many remain.
LUA_ADVANCE = """
redis.call('LPOP', KEYS[1])
local n = redis.call('LLEN', KEYS[1])
if n == 0 then redis.call('DEL', KEYS[2]) end
return n
"""

# The channels whose retry is due (removed from the set as they are taken, so one worker enqueues each).
# KEYS: due. ARGV: now, how many at most.
LUA_TAKE_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return ids
"""
