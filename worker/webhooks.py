"""Webhook delivery (queue ``webhooks``): one job per erasure sends its pending events oldest first. A failure
reschedules that erasure's delivery with exponential backoff and jitter (a due time that every worker's heartbeat
enqueues), until the event is older than ``ERASEPRO_WEBHOOK_RETRY_S``. Redirects are not followed; the target is
checked again before every attempt."""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any

import httpx

from erasepro_jobs import store
from erasepro_jobs.webhooks import (
    K_DUE,
    LOCK_TTL_S,
    LUA_ADVANCE,
    MAX_DELIVERY_LOG,
    check_target,
    k_attempts,
    k_deliveries,
    k_lock,
    k_pending,
    payload,
    sign,
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


def _attempt(url: str, secret: str, event: dict[str, Any], subject: str) -> tuple[bool, str]:
    body = payload(event, subject)
    ts = int(time.time())
    headers = {"content-type": "application/json", "webhook-id": event["id"], "webhook-timestamp": str(ts),
               "webhook-signature": sign(secret, event["id"], ts, body), "user-agent": "erasepro-webhooks/1"}
    try:
        with httpx.Client(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False) as client:
            resp = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"[:300]
    return 200 <= resp.status_code < 300, f"HTTP {resp.status_code}"


def deliver(*, subject: str) -> dict[str, Any]:
    """Send ``subject``'s pending events in order (see the module docstring)."""
    state = get_state()
    r, settings = state.r, state.settings
    advance = r.register_script(LUA_ADVANCE)
    sent = 0
    for _ in range(MAX_PER_RUN):
        raw = r.lindex(k_pending(subject), 0)
        if raw is None:
            r.delete(k_lock(subject))
            return {"sent": sent}
        event = json.loads(raw)
        url, secret = r.hmget(store.k_job(subject), "webhook", "webhook_secret")
        problem = None if url and secret else "the erasure's record is gone"
        problem = problem or check_target(url, settings.webhook_allow_private)
        if problem:
            _note(r, subject, {"event_id": event["id"], "type": event["type"], "attempt": 0, "at": time.time(),
                               "outcome": "dropped", "detail": problem})
            advance(keys=[k_pending(subject), k_lock(subject)])
            continue
        attempt = int(r.hincrby(k_attempts(subject), event["id"], 1))
        ok, detail = _attempt(url, secret, event, subject)
        gave_up = not ok and time.time() - float(event["created_at"]) > settings.webhook_retry_s
        outcome = "delivered" if ok else ("failed" if gave_up else "retrying")
        _note(r, subject, {"event_id": event["id"], "type": event["type"], "attempt": attempt, "at": time.time(),
                           "outcome": outcome, "detail": detail})
        if ok or gave_up:
            r.hdel(k_attempts(subject), event["id"])
            advance(keys=[k_pending(subject), k_lock(subject)])
            sent += ok
            continue
        delay = min(settings.webhook_backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S) * random.uniform(0.5, 1.0)
        _reschedule(subject, delay)
        return {"sent": sent, "retry_in_s": round(delay, 3)}
    _reschedule(subject, 0.0)
    return {"sent": sent}


def _reschedule(subject: str, delay_s: float) -> None:
    """Run again after ``delay_s`` (the heartbeat's pump enqueues it when due); the lock outlives the wait."""
    r = get_state().r
    with r.pipeline(transaction=True) as p:
        p.expire(k_lock(subject), LOCK_TTL_S)
        p.zadd(K_DUE, {subject: time.time() + delay_s})
        p.execute()
