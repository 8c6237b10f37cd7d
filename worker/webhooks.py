"""Webhook delivery (queue ``webhooks``): one job per (erasure, target) channel sends its pending events oldest
first; the target is the erasure's own webhook or one of its tenant's endpoints. A failure reschedules that
channel's delivery with exponential backoff and jitter (a due time that every worker's heartbeat enqueues), until
the event is older than ``ERASEPRO_WEBHOOK_RETRY_S``. Redirects are not followed; before every attempt the target
is read again (an endpoint deleted, disabled or no longer taking the event type drops it), its host resolved and
checked again, and the connection goes to the address that was checked."""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any

import httpx

from erasepro_jobs import metrics, store
from erasepro_jobs.endpoints import Endpoints
from erasepro_jobs.settings import Settings
from erasepro_jobs.webhooks import (
    JOB_TARGET,
    K_DUE,
    LOCK_TTL_S,
    LUA_ADVANCE,
    MAX_DELIVERY_LOG,
    Target,
    Unresolved,
    channel,
    k_attempts,
    k_deliveries,
    k_lock,
    k_pending,
    payload,
    post_pinned,
    resolve_target,
    signature_header,
)
from worker.runtime import get_state

log = logging.getLogger("erasepro.webhooks")

TIMEOUT_S = 10.0
MAX_PER_RUN = 100  # events sent by one job run before it re-enqueues itself (others get the worker too)
MAX_BACKOFF_S = 600.0


def _note(r: Any, subject: str, entry: dict[str, Any]) -> None:
    with r.pipeline(transaction=True) as p:
        p.rpush(k_deliveries(subject), json.dumps(entry, separators=(",", ":")))
        p.ltrim(k_deliveries(subject), -MAX_DELIVERY_LOG, -1)
        p.execute()


def _attempt(target: Target, secrets: list[str], event: dict[str, Any], subject: str) -> tuple[bool, str]:
    body = payload(event, subject)
    ts = int(time.time())
    headers = {"content-type": "application/json", "webhook-id": event["id"], "webhook-timestamp": str(ts),
               "webhook-signature": signature_header(secrets, event["id"], ts, body),
               "user-agent": "erasepro-webhooks/1"}
    try:
        resp = post_pinned(target, body, headers, TIMEOUT_S)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"[:300]
    return 200 <= resp.status_code < 300, f"HTTP {resp.status_code}"


def _destination(r: Any, settings: Settings, subject: str, target: str,
                 event_type: str) -> tuple[Target, list[str]] | str:
    """Where and with which secrets to send now, or why the event is dropped (read again before every attempt,
    so an endpoint changed, disabled or deleted meanwhile is honoured); :class:`Unresolved`: retry later."""
    url, secret, tenant = r.hmget(store.k_job(subject), "webhook", "webhook_secret", "tenant")
    if not tenant:
        return "the erasure's record is gone"
    if target == JOB_TARGET:
        if not url or not secret:
            return "the erasure's record is gone"
        secrets = [secret]
    else:
        ep = Endpoints(r).get(tenant, target)
        if ep is None:
            return "the endpoint was deleted"
        if not ep.enabled:
            return "the endpoint is disabled"
        if not ep.takes(event_type):
            return "the endpoint no longer subscribes to this event type"
        url, secrets = ep.url, ep.signing_secrets(time.time())
    found = resolve_target(url, settings.webhook_allow_private, settings.webhook_port_set)
    return found if isinstance(found, str) else (found, secrets)


def deliver(*, subject: str, target: str = JOB_TARGET) -> dict[str, Any]:
    """Send the pending events of channel (``subject``, ``target``) in order (see the module docstring)."""
    state = get_state()
    r, settings = state.r, state.settings
    advance = r.register_script(LUA_ADVANCE)
    chan = channel(subject, target)
    sent = 0
    for _ in range(MAX_PER_RUN):
        raw = r.lindex(k_pending(chan), 0)
        if raw is None:
            r.delete(k_lock(chan))
            return {"sent": sent}
        event = json.loads(raw)
        dest = _destination(r, settings, subject, target, event["type"])
        base = {"event_id": event["id"], "type": event["type"], "target": target}
        if isinstance(dest, str) and not isinstance(dest, Unresolved):  # refused for good: drop it
            _note(r, subject, {**base, "attempt": 0, "at": time.time(), "outcome": "dropped", "detail": dest})
            metrics.webhook_attempt(r, "dropped")
            advance(keys=[k_pending(chan), k_lock(chan)])
            continue
        attempt = int(r.hincrby(k_attempts(chan), event["id"], 1))
        ok, detail = (False, str(dest)) if isinstance(dest, Unresolved) else _attempt(*dest, event, subject)
        gave_up = not ok and time.time() - float(event["created_at"]) > settings.webhook_retry_s
        outcome = "delivered" if ok else ("failed" if gave_up else "retrying")
        _note(r, subject, {**base, "attempt": attempt, "at": time.time(), "outcome": outcome, "detail": detail})
        metrics.webhook_attempt(r, outcome)
        if ok or gave_up:
            r.hdel(k_attempts(chan), event["id"])
            advance(keys=[k_pending(chan), k_lock(chan)])
            sent += ok
            continue
        delay = min(settings.webhook_backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S) * random.uniform(0.5, 1.0)
        _reschedule(chan, delay)
        return {"sent": sent, "retry_in_s": round(delay, 3)}
    _reschedule(chan, 0.0)
    return {"sent": sent}


def _reschedule(chan: str, delay_s: float) -> None:
    """Run again after ``delay_s`` (the heartbeat's pump enqueues it when due); the lock outlives the wait."""
    r = get_state().r
    with r.pipeline(transaction=True) as p:
        p.expire(k_lock(chan), LOCK_TTL_S)
        p.zadd(K_DUE, {chan: time.time() + delay_s})
        p.execute()
