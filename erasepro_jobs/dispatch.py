"""Webhook dispatch: an event queued for every target that takes it, and the delivery jobs that send them.

Targets are the erasure's own ``webhook`` (if its filter allows) and every enabled endpoint of the tenant whose
filter allows. Each (erasure, target) is its own ordered queue (:mod:`erasepro_jobs.webhooks`); one Lua call
queues the event on all of them and one pipeline enqueues the delivery jobs that were not running.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from erasepro_jobs import store, webhooks
from erasepro_jobs.endpoints import Endpoints
from erasepro_jobs.events import dumps
from erasepro_jobs.settings import DELIVER_FUNC, WEBHOOK_QUEUE

log = logging.getLogger("erasepro.lifecycle")


class WebhookDispatch:
    """Fan-out of events to webhook targets, over a sync Redis client (``decode_responses=True``)."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.endpoints = Endpoints(r)
        self._push = r.register_script(webhooks.LUA_PUSH)
        self._take_due = r.register_script(webhooks.LUA_TAKE_DUE)
        self._rq_conn: redis.Redis | None = None

    def queue(self, tenant: str, subject: str, event: dict[str, Any]) -> None:
        """Queue ``event`` of ``subject`` for each target that takes it; never raises (the job's outcome never
        depends on receivers)."""
        try:
            url, wanted = self.r.hmget(store.k_job(subject), "webhook", "webhook_events")
            targets = [webhooks.JOB_TARGET] if url and (not wanted or event["type"] in json.loads(wanted)) else []
            targets += [ep.id for ep in self.endpoints.for_event(tenant, event["type"])] if tenant else []
            if not targets:
                return
            chans = [webhooks.channel(subject, t) for t in targets]
            started = self._push(
                keys=[webhooks.k_targets(subject), *(k for c in chans for k in (webhooks.k_pending(c),
                                                                               webhooks.k_lock(c)))],
                args=[dumps(event), webhooks.LOCK_TTL_S, *targets])
            self._enqueue_deliveries([(subject, t) for t in started])
        except (redis.RedisError, ValueError, KeyError) as exc:
            log.warning("could not queue the webhooks of %s for %s: %s", subject, event["id"], exc)

    def pump(self, now: float | None = None, batch: int = 100) -> int:
        """Enqueue the delivery jobs whose retry is due (every worker's heartbeat calls this); returns how many."""
        due = self._take_due(keys=[webhooks.K_DUE], args=[repr(now or store.now()), batch])
        self._enqueue_deliveries([webhooks.split_channel(chan) for chan in due])
        return len(due)

    def forget(self, subject: str) -> None:
        """Drop a deleted erasure's webhook queues (every target's) and deliveries; a delivery job still holding a
        lock finds its queue empty and ends."""
        chans = [webhooks.channel(subject, t) for t in self.r.smembers(webhooks.k_targets(subject))]
        chans.append(subject)
        self.r.delete(webhooks.k_deliveries(subject), webhooks.k_targets(subject),
                      *(k for c in chans for k in (webhooks.k_pending(c), webhooks.k_attempts(c))))

    def _enqueue_deliveries(self, channels: list[tuple[str, str]]) -> None:
        """One delivery job per (subject, target), all in one round trip."""
        if not channels:
            return
        Queue(WEBHOOK_QUEUE, connection=self.rq_connection(), serializer=JSONSerializer).enqueue_many([
            Queue.prepare_data(DELIVER_FUNC, kwargs={"subject": subject, "target": target}, timeout=1200,
                               result_ttl=600, failure_ttl=86400) for subject, target in channels])

    def rq_connection(self) -> redis.Redis:
        """RQ needs a client that does not decode responses: one on the same server."""
        if self._rq_conn is None:
            pool = self.r.connection_pool
            kwargs = {**pool.connection_kwargs, "decode_responses": False}
            self._rq_conn = redis.Redis(connection_pool=redis.ConnectionPool(
                connection_class=pool.connection_class, **kwargs))
        return self._rq_conn
