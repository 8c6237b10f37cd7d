"""``GET /metrics``: Prometheus text format, for a Bearer of ``ERASEPRO_METRICS_TOKEN`` or an admin key.

Two kinds of series (docs/operations.md lists them all, with alert rules):

* **service-wide**, read from Redis at scrape time (:mod:`erasepro_jobs.metrics`): queue depths, running jobs,
  live workers, jobs by kind and final status, job durations by stage, webhook delivery outcomes, workers' GPU
  memory. Every API replica answers the same values: aggregate them with ``max``, not ``sum``.
* **per API process**: HTTP requests by method, route template and status, and their latency. With several
  processes on one machine (``uvicorn --workers N``), set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder
  (cleared before the processes start) and every process answers the sum over all of them.

Why a token: the route names and counts reveal how the service is used, and the endpoint sits beside a tenant
API on the same port; unset, ``/metrics`` answers 404, so nothing is exposed by default.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator
from typing import Any

import redis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from app.problems import problem
from erasepro_jobs import metrics, store

router = APIRouter(tags=["health"])

# Per process (in multiprocess mode, one file per process under PROMETHEUS_MULTIPROC_DIR).
HTTP_REQUESTS = Counter("erasepro_http_requests", "HTTP requests answered, by method, route template and status",
                        ["method", "route", "status"])
HTTP_SECONDS = Histogram("erasepro_http_request_duration_seconds", "Time to answer an HTTP request (to the last "
                         "byte of the body)", ["method", "route"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0))


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    method = method if method in METHODS else "other"  # a client's made-up method must not grow the label set
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_SECONDS.labels(method, route).observe(seconds)


class ServiceCollector(Collector):
    """The service-wide series, from Redis at each scrape (see :func:`erasepro_jobs.metrics.snapshot`)."""

    def __init__(self, r: redis.Redis, lease_ttl_s: float) -> None:
        self.r, self.lease_ttl_s = r, lease_ttl_s

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("erasepro_redis_up", "1 when the job store (Redis) answered this scrape")
        try:
            snap = metrics.snapshot(self.r, store.K_WORKERS, self.lease_ttl_s)
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily("erasepro_queue_depth", "Jobs waiting in each RQ queue (not yet taken by a "
                                  "worker)", labels=["queue"])
        for q, n in snap["queue_depth"].items():
            depth.add_metric([q], n)
        yield depth
        yield GaugeMetricFamily("erasepro_jobs_running", "Jobs running now", value=snap["running"])
        yield GaugeMetricFamily("erasepro_workers_alive", "Workers whose heartbeat is younger than the lease TTL",
                                value=snap["workers_alive"])
        jobs = CounterMetricFamily("erasepro_jobs", "Jobs that ended, by kind and final status",
                                   labels=["kind", "status"])
        for (kind, status), n in sorted(snap["jobs"].items()):
            jobs.add_metric([kind, status], n)
        yield jobs
        hist = HistogramMetricFamily("erasepro_job_duration_seconds", "Job durations by kind and stage (queue: "
                                     "waiting; load, solve, save, generate: the job's own stages; run: started "
                                     "to ended)", labels=["kind", "stage"])
        for (kind, stage), h in sorted(snap["durations"].items()):
            buckets = [("+Inf" if b == float("inf") else repr(b), v) for b, v in h["buckets"]]
            hist.add_metric([kind, stage], buckets, h["sum"])
        yield hist
        hooks = CounterMetricFamily("erasepro_webhook_deliveries", "Webhook delivery attempts by outcome "
                                    "(delivered; retrying: failed, retried later; failed: given up; dropped: "
                                    "target refused before sending)", labels=["outcome"])
        for outcome in ("delivered", "retrying", "failed", "dropped"):
            hooks.add_metric([outcome], snap["webhooks"].get(outcome, 0))
        yield hooks
        gpu = GaugeMetricFamily("erasepro_gpu_memory_bytes", "CUDA memory of each live worker's devices "
                                "(allocated and reserved by torch, total on the device)",
                                labels=["worker", "device", "kind"])
        for worker, values in sorted(snap["gpu"].items()):
            for key, n in sorted(values.items()):
                device, _, kind = key.partition("|")
                gpu.add_metric([worker, device, kind], n)
        yield gpu


def _registry(request: Request) -> CollectorRegistry:
    """One per application: the service collector, plus this process's (or, in multiprocess mode, every
    process's) HTTP series."""
    app = request.app
    reg = getattr(app.state, "metrics_registry", None)
    if reg is None:
        from prometheus_client import REGISTRY

        reg = CollectorRegistry(auto_describe=False)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            MultiProcessCollector(reg)
        else:
            reg.register(_Only(REGISTRY, ("erasepro_http_",)))
        svc = app.state.service
        reg.register(ServiceCollector(svc.lifecycle.r, svc.settings.lease_ttl_s))
        app.state.metrics_registry = reg
    return reg


class _Only(Collector):
    """The families of ``registry`` whose names start with ``prefixes`` (not the process/GC defaults twice)."""

    def __init__(self, registry: Any, prefixes: tuple[str, ...]) -> None:
        self.registry, self.prefixes = registry, prefixes

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            if family.name.startswith(self.prefixes):
                yield family


def _authorized(request: Request) -> bool | None:
    """True for the metrics token or an admin key; False for anything else; None when metrics are off."""
    svc = request.app.state.service
    token = svc.settings.metrics_token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""
    if token and given and hmac.compare_digest(token.encode(), given.encode()):
        return True
    if given and svc.keys.is_admin(given):
        return True
    return False if (token or svc.settings.admin_keys_env) else None


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    ok = _authorized(request)
    if ok is None:
        return problem(404, "metrics are off: set ERASEPRO_METRICS_TOKEN (or ERASEPRO_ADMIN_KEYS) and scrape "
                            "with that Bearer", instance="/metrics")
    if not ok:
        return problem(401, "send 'Authorization: Bearer <metrics token or admin key>'",
                       {"WWW-Authenticate": "Bearer"}, "/metrics")
    body = await run_in_threadpool(generate_latest, _registry(request))
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
