"""Webhooks, the torch-free half: Standard Webhooks signing, the target check, and the per-erasure delivery queue.

Signature (https://www.standardwebhooks.com): ``webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.
{body}"))>`` where ``key`` is the base64 part of the ``whsec_…`` secret; ``webhook-id`` is the event id (the same
on every retry, so receivers can drop duplicates) and ``webhook-timestamp`` the attempt's Unix time.

Order: an erasure's deliveries wait in one Redis list and one delivery job at a time (holding a lock) sends them
oldest first, so a receiver sees them in event order even across retries. A retry is a due time in ``wh:due``;
every worker's heartbeat thread enqueues the delivery jobs that are due (no separate scheduler process).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
from typing import Any
from urllib.parse import urlsplit

from erasepro_jobs.settings import DELIVER_FUNC, REDIS_PREFIX, WEBHOOK_QUEUE

__all__ = ["DELIVER_FUNC", "WEBHOOK_QUEUE"]
SECRET_PREFIX = "whsec_"
MAX_DELIVERY_LOG = 500
MAX_URL = 2048
MAX_RETRY_S = 3600  # the longest ERASEPRO_WEBHOOK_RETRY_S
LOCK_TTL_S = MAX_RETRY_S + 1200  # a delivery job's lock outlives its longest backoff; a dead job's expires


K_DUE = f"{REDIS_PREFIX}wh:due"  # zset: erasure id -> when its delivery job is due again (a retry's backoff)


def k_pending(subject: str) -> str:
    return f"{REDIS_PREFIX}wh:{subject}:pending"


def k_lock(subject: str) -> str:
    return f"{REDIS_PREFIX}wh:{subject}:lock"


def k_attempts(subject: str) -> str:
    return f"{REDIS_PREFIX}wh:{subject}:attempts"


def k_deliveries(subject: str) -> str:
    return f"{REDIS_PREFIX}wh:{subject}:deliveries"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,`` + base64 HMAC-SHA256 over ``"{msg_id}.{timestamp}.{body}"`` keyed by the secret's decoded bytes."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def check_target(url: str, allow_private: bool) -> str | None:
    """Why ``url`` may not receive webhooks (``None``: it may). Loopback, private, link-local, reserved and
    multicast addresses are refused unless ``allow_private``; every address the host resolves to is checked."""
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
        return f"host does not resolve ({exc})"
    if allow_private:
        return None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast
                or ip.is_unspecified):
            return f"{parts.hostname} resolves to a non-public address ({ip}); not allowed on this server"
    return None


def payload(event: dict[str, Any], erasure_id: str) -> bytes:
    """The body: ``{"type", "timestamp", "data"}`` (Standard Webhooks' shape) with the event in ``data``."""
    return json.dumps({"type": event["type"], "timestamp": event["created_at"],
                       "data": {"erasure_id": erasure_id, "event_id": event["id"], **(event.get("data") or {})}},
                      separators=(",", ":")).encode()


# Queue an event for the subject; returns 1 when no delivery job holds the lock (the caller enqueues one).
# KEYS: pending, lock. ARGV: event JSON, lock ttl.
LUA_PUSH = """
redis.call('RPUSH', KEYS[1], ARGV[1])
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[2])) then return 1 end
return 0
"""

# The head was handled: drop it; release the lock when nothing is left (atomic with LUA_PUSH, so an event
# pushed meanwhile is never stranded). KEYS: pending, lock. Returns how many remain.
LUA_ADVANCE = """
redis.call('LPOP', KEYS[1])
local n = redis.call('LLEN', KEYS[1])
if n == 0 then redis.call('DEL', KEYS[2]) end
return n
"""

# The erasures whose retry is due (removed from the set as they are taken, so one worker enqueues each).
# KEYS: due. ARGV: now, how many at most.
LUA_TAKE_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return ids
"""
