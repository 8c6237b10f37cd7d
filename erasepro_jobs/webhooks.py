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

from erasepro_jobs.settings import REDIS_PREFIX

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
    """Why a host did not resolve: perhaps only for now, so a delivery retries it (the door accepts it)."""


@dataclass(frozen=True)
class Target:
    """A checked delivery target: the URL as given and the address it resolved to (what to connect to)."""

    url: str
    ip: str


# Ranges Python 3.11's ``is_global`` lets through that must never receive a delivery. The wrappers (IPv4-mapped,
# 6to4, NAT64, Teredo) are decoded before the check, so their own ranges need no entry here.
_NEVER = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.88.99.0/24", "198.18.0.0/15", "240.0.0.0/4",
    "::/96",  # IPv4-compatible (deprecated): ::127.0.0.1 is "global" to ipaddress
    "64:ff9b:1::/48",  # local-use NAT64
    "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "ff00::/8",
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries and would reach: IPv4-mapped (``::ffff:a.b.c.d``), 6to4
    (``2002:AABB:CCDD::``), NAT64 (``64:ff9b::a.b.c.d``) and Teredo (server and client)."""
    if ip.version == 4:
        return []
    assert isinstance(ip, ipaddress.IPv6Address)
    out = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo:
        out += list(ip.teredo)
    if ip in _NAT64:
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable, and so is every IPv4 address it wraps (decoded first: ``[2002:7f00:1::]`` is loopback)."""
    inner = embedded_ipv4(ip)
    if inner:
        return all(is_public(a) for a in inner)
    return ip.is_global and not ip.is_multicast and not any(ip in net for net in _NEVER if net.version == ip.version)


def parse_ports(text: str) -> frozenset[int] | None:
    """``"80,443"`` -> ``{80, 443}``; ``"any"`` or ``"*"`` -> ``None`` (every port)."""
    text = text.strip().lower()
    if text in ("any", "*"):
        return None
    ports = {int(p) for p in (q.strip() for q in text.split(",")) if p}
    if not ports or not all(0 < p < 65536 for p in ports):
        raise ValueError(f"webhook ports are 'any' or comma-separated ports in 1..65535, got {text!r}")
    return frozenset(ports)


def resolve_target(url: str, allow_private: bool, ports: frozenset[int] | None = None) -> Target | str:
    """The :class:`Target` of ``url``, or why it may not receive webhooks. Every address the host resolves to
    must be public (:func:`is_public`, wrapped IPv4 decoded) unless ``allow_private``, and the port one of
    ``ports`` (``None``: any); the first address is the one to connect to. The door (registration) and every
    delivery call this same function."""
    if len(url) > MAX_URL:
        return f"at most {MAX_URL} characters"
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - a malformed bracketed host raises here
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username or parts.password:
        return "must not carry credentials"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        return f"bad port ({exc})"
    if ports is not None and port not in ports:
        return f"port {port} is not allowed for webhooks on this server (allowed: {sorted(ports)})"
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        return Unresolved(f"host does not resolve ({exc})")
    if not infos:
        return Unresolved("host does not resolve")
    ips = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
    if not allow_private:
        for ip in ips:
            if not is_public(ip):
                return f"{parts.hostname} resolves to a non-public address ({ip}); not allowed on this server"
    return Target(url, str(ips[0]))


def check_target(url: str, allow_private: bool, ports: frozenset[int] | None = None) -> str | None:
    """Why ``url`` may not receive webhooks (``None``: it may); see :func:`resolve_target`."""
    found = resolve_target(url, allow_private, ports)
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
