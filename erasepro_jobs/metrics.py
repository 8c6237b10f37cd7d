"""Service-wide metrics kept in Redis, so that every process on every machine adds to the same numbers.

Workers and API processes come and go (and run on different machines), so a process-local Prometheus registry
would lose a dead worker's counts and could not be scraped behind a queue. What *any* process records here -
jobs by kind and final status, the job-duration histogram by stage, webhook delivery outcomes, each worker's GPU
memory - lives in a few Redis hashes; ``GET /metrics`` on any API process reads them at scrape time
(:func:`snapshot`) together with values Redis already holds (queue depths, live workers). Per-process numbers
(HTTP requests) are the API's own, in ``app.metrics``.

Redis keys (prefix ``erasepro:``)::

    metrics:jobs                  hash: "{kind}|{status}" -> jobs that ended so
    metrics:duration              hash: "{kind}|{stage}|{le}" -> cumulative bucket count, "...|sum", "...|count"
    metrics:webhooks              hash: outcome (delivered, retrying, failed, dropped) -> delivery attempts
    metrics:gpu:{worker}          hash: "{device}|{allocated|reserved|total}" -> bytes (TTL: a dead worker's expire)

Counters start again from zero when Redis loses its data (``FLUSHALL``): Prometheus' ``rate``/``increase`` treat
that as a counter reset. Recording never raises: a metric must never change a job's outcome.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import redis

from erasepro_jobs.settings import ERASE_QUEUE, GENERATE_QUEUE, HEAVY_QUEUE, REDIS_PREFIX, WEBHOOK_QUEUE

log = logging.getLogger("erasepro.metrics")

K_JOBS = f"{REDIS_PREFIX}metrics:jobs"
K_DURATION = f"{REDIS_PREFIX}metrics:duration"
K_WEBHOOKS = f"{REDIS_PREFIX}metrics:webhooks"
QUEUES = (ERASE_QUEUE, HEAVY_QUEUE, GENERATE_QUEUE, WEBHOOK_QUEUE)
# seconds; a cached model loads in 0 s, a cold SD-1.x in tens of seconds, a large solve in minutes
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, math.inf)
# a job record's ``timings`` field -> the stage label it is observed under
STAGES = {"queue_wait_s": "queue", "load_s": "load", "solve_s": "solve", "save_s": "save", "generate_s": "generate"}


def k_gpu(worker: str) -> str:
    return f"{REDIS_PREFIX}metrics:gpu:{worker}"


def rq_queue_key(queue: str) -> str:
    """The Redis list RQ keeps a queue's waiting job ids in (what KEDA's redis scaler watches)."""
    return f"rq:queue:{queue}"


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


def job_ended(r: redis.Redis, kind: str, status: str, timings: Mapping[str, Any] | None = None,
              run_s: float | None = None) -> None:
    """Count a job that reached ``status`` and observe its stage durations (``timings``' ``*_s`` fields, and
    ``run_s`` - started to ended - as stage ``run``), in one round trip."""
    observed = {STAGES[k]: float(v) for k, v in (timings or {}).items()
                if k in STAGES and isinstance(v, int | float) and v >= 0}
    if run_s is not None and run_s >= 0:
        observed["run"] = run_s
    try:
        with r.pipeline(transaction=False) as p:
            p.hincrby(K_JOBS, f"{kind}|{status}", 1)
            for stage, value in observed.items():
                base = f"{kind}|{stage}"
                for bound in BUCKETS:
                    if value <= bound:
                        p.hincrby(K_DURATION, f"{base}|{_le(bound)}", 1)
                p.hincrbyfloat(K_DURATION, f"{base}|sum", value)
                p.hincrby(K_DURATION, f"{base}|count", 1)
            p.execute()
    except redis.RedisError as exc:
        log.warning("could not record the metrics of a %s job: %s", kind, exc)


def webhook_attempt(r: redis.Redis, outcome: str) -> None:
    """Count one delivery attempt by outcome: ``delivered``, ``retrying`` (failed, will retry), ``failed``
    (failed and given up) or ``dropped`` (the target refused for good before sending)."""
    try:
        r.hincrby(K_WEBHOOKS, outcome, 1)
    except redis.RedisError as exc:
        log.warning("could not record a webhook metric: %s", exc)


def gpu_memory() -> dict[str, int]:
    """``{"{device}|allocated": bytes, ...}`` for every CUDA device this process sees; {} without CUDA (or torch)."""
    import sys

    torch = sys.modules.get("torch")  # never import torch for a metric: a worker has it loaded already
    if torch is None or not torch.cuda.is_available():
        return {}
    out: dict[str, int] = {}
    for i in range(torch.cuda.device_count()):
        dev = f"cuda:{i}"
        out[f"{dev}|allocated"] = int(torch.cuda.memory_allocated(i))
        out[f"{dev}|reserved"] = int(torch.cuda.memory_reserved(i))
        out[f"{dev}|total"] = int(torch.cuda.get_device_properties(i).total_memory)
    return out


def report_gpu(r: redis.Redis, worker: str, ttl_s: int) -> None:
    """Publish this worker's GPU memory (the heartbeat calls this); expires ``ttl_s`` after the last beat."""
    values = gpu_memory()
    if not values:
        return
    try:
        with r.pipeline(transaction=True) as p:
            p.delete(k_gpu(worker))
            p.hset(k_gpu(worker), mapping=values)
            p.expire(k_gpu(worker), ttl_s)
            p.execute()
    except redis.RedisError as exc:
        log.warning("could not record the GPU memory: %s", exc)


# ------------------------------------------------------------------------------------------ reading
def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def snapshot(r: redis.Redis, workers_key: str, lease_ttl_s: float) -> dict[str, Any]:
    """Everything service-wide at this moment (``r`` decodes responses): queue depths, running jobs, live
    workers, job counts, duration histograms, webhook outcomes and GPU memory, in two round trips."""
    from erasepro_jobs.lifecycle import K_RUNNING

    sec, usec = r.time()
    now = sec + usec / 1e6
    with r.pipeline(transaction=False) as p:
        for q in QUEUES:
            p.llen(rq_queue_key(q))
        p.scard(K_RUNNING)
        p.zrangebyscore(workers_key, now - lease_ttl_s, "+inf")
        p.hgetall(K_JOBS)
        p.hgetall(K_DURATION)
        p.hgetall(K_WEBHOOKS)
        got = p.execute()
    depths = dict(zip(QUEUES, got[: len(QUEUES)], strict=True))
    running, alive, jobs, durations, hooks = got[len(QUEUES):]
    gpu: dict[str, dict[str, int]] = {}
    if alive:
        with r.pipeline(transaction=False) as p:
            for w in alive:
                p.hgetall(k_gpu(w))
            for w, values in zip(alive, p.execute(), strict=True):
                if values:
                    gpu[w] = {k: int(_num(v)) for k, v in values.items()}
    hist: dict[tuple[str, str], dict[str, float]] = {}
    for field, value in durations.items():
        kind, stage, part = (field.split("|") + ["", ""])[:3]
        hist.setdefault((kind, stage), {})[part] = _num(value)
    return {
        "queue_depth": {q: int(n) for q, n in depths.items()},
        "running": int(running),
        "workers_alive": len(alive),
        "jobs": {tuple(k.split("|", 1)): int(_num(v)) for k, v in jobs.items() if "|" in k},
        "durations": {k: {"buckets": [(b, v.get(_le(b), 0.0)) for b in BUCKETS], "sum": v.get("sum", 0.0),
                          "count": v.get("count", 0.0)} for k, v in hist.items()},
        "webhooks": {k: int(_num(v)) for k, v in hooks.items()},
        "gpu": gpu,
    }
