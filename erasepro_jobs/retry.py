"""At-least-once jobs: a job whose worker died is queued again, up to ``ERASEPRO_JOB_ATTEMPTS`` runs (default 2),
then failed with the reason and the attempts it had.

Two ways a worker dies with a job (both noticed by the reaper that every worker's heartbeat and ``erasepro
serve``'s supervisor run):

* **after it started the job** (record ``running``, lease expired, or ``serve`` saw the process exit): the
  record goes back to ``queued`` with ``attempt`` + 1 and an ``erasure.requeued`` event (one Lua step, like every
  transition), what the dead run put in the artifact store is removed (no manifest: nothing was served), and the
  same RQ job is queued again, so the retry writes the one checkpoint under the same id;
* **between RQ's dequeue and the start** (record still ``queued``, the RQ job in the queue's intermediate list or
  started registry, its worker gone): the RQ job is queued again and ``attempt`` counted the same way.

A checkpoint whose manifest was stored before the worker died is not redone: the job is recorded succeeded
(:meth:`erasepro_jobs.lifecycle.Lifecycle.lease_lost`). Limitation: a worker that was only *paused* past its
lease (not dead) may finish its run beside the retry; both write the same complete objects under the same keys.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer

from erasepro_jobs import store
from erasepro_jobs.settings import ERASE_QUEUE, GENERATE_QUEUE, HEAVY_QUEUE, REDIS_PREFIX, Settings

if TYPE_CHECKING:
    from erasepro_jobs.lifecycle import JobRef, Lifecycle

log = logging.getLogger("erasepro.retry")

QUEUES = (ERASE_QUEUE, GENERATE_QUEUE, HEAVY_QUEUE)
UNSTARTED_GRACE_LEASES = 2  # a dequeued job no worker prepared is retried after this many lease TTLs

# Back to queued. KEYS: job, events, lease, running. ARGV[4..]: statuses it may leave (space-separated), 'lease' to
# require the lease to be gone. Returns {'requeued' | the status seen | 'leased' | 'missing', event id}.
_REQUEUE = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', ''} end
if not string.find(' ' .. ARGV[4] .. ' ', ' ' .. st .. ' ', 1, true) then return {st, ''} end
if ARGV[5] == 'lease' and redis.call('EXISTS', KEYS[3]) == 1 then return {'leased', ''} end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return {'cancel_requested', ''} end
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempt', ARGV[6], 'progress', '{"stage":"queued","fraction":0.0}')
redis.call('HDEL', KEYS[1], 'started_at', 'worker')
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], redis.call('HGET', KEYS[1], 'id'))
return {'requeued', emit()}
"""


@functools.cache
def _settings() -> Settings:
    return Settings.from_env()


def max_attempts() -> int:
    return _settings().job_attempts


def attempt_of(rec: dict[str, str]) -> int:
    try:
        return max(1, int(rec.get("attempt") or 1))
    except ValueError:
        return 1


def _final(reason: str, attempt: int, limit: int) -> str:
    return f"{reason} (attempt {attempt} of {limit}: no attempts left); no checkpoint was produced - submit it again"


def requeue_or_fail(lc: Lifecycle, job: JobRef, rec: dict[str, str], reason: str, *,
                    require_lease_lost: bool = False) -> str:
    """A running job lost its worker: queue it again if it has attempts left, else fail it saying so. Returns
    ``ok`` when the record changed (either way), else why not (as :meth:`Lifecycle.finish` does)."""
    attempt, limit = attempt_of(rec), max_attempts()
    if attempt >= limit:
        return lc.finish(job, "failed", require_lease_lost=require_lease_lost,
                         error=_final(reason, attempt, limit))
    rq_job = _rq_job(lc, job.id)
    if rq_job is None:  # nothing to run again (Redis lost it, or the job was never queued through RQ)
        return lc.finish(job, "failed", error=f"{reason}; no checkpoint was produced - submit the job again",
                         require_lease_lost=require_lease_lost)
    if job.kind == "erasure":  # what the dead run stored without a manifest is nobody's: the retry writes anew
        store.delete_checkpoint(lc.storage, job.tenant, job.id)
    result = _transition(lc, job, ("running",), attempt + 1, reason, require_lease_lost)
    if result != "requeued":
        return result if result != "cancel_requested" else lc.finish(job, "cancelled", error=reason)
    _enqueue_again(lc, rq_job, reason)
    return "ok"


def _transition(lc: Lifecycle, job: JobRef, from_status: tuple[str, ...], attempt: int, reason: str,
                require_lease_lost: bool) -> str:
    from erasepro_jobs.lifecycle import _EMIT, K_RUNNING

    if "REQUEUE" not in lc._scripts:
        lc._scripts["REQUEUE"] = lc.r.register_script(_EMIT + _REQUEUE)
    return lc._run("REQUEUE", job, "requeued", {"attempt": attempt, "reason": reason},
                   [store.k_lease(job.id), K_RUNNING],
                   [" ".join(from_status), "lease" if require_lease_lost else "", str(attempt)])


def _rq_job(lc: Lifecycle, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=lc.dispatch.rq_connection(), serializer=JSONSerializer)
    except NoSuchJobError:
        return None


def _enqueue_again(lc: Lifecycle, rq_job: Job, reason: str) -> None:
    """Put the same RQ job (function and arguments) back on its queue, dropping the dead run's registry entries."""
    conn = lc.dispatch.rq_connection()
    queue = Queue(rq_job.origin, connection=conn, serializer=JSONSerializer)
    _forget_runs(conn, queue, rq_job.id)
    queue.enqueue_job(rq_job)
    log.warning("job %s re-queued on %s: %s", rq_job.id, rq_job.origin, reason)


def _forget_runs(conn: redis.Redis, queue: Queue, job_id: str) -> None:
    wip = queue.started_job_registry.key
    stale = [m for m in conn.zrange(wip, 0, -1) if m.decode().split(":", 1)[0] == job_id]
    with conn.pipeline() as p:
        if stale:
            p.zrem(wip, *stale)
        p.lrem(queue.intermediate_queue_key, 0, job_id)
        p.execute()


def reap_unstarted(lc: Lifecycle) -> int:
    """Re-queue jobs a dead worker dequeued but never started (see the module docstring); returns how many."""
    from erasepro_jobs.lifecycle import JobRef

    conn = lc.dispatch.rq_connection()
    queues = [Queue(name, connection=conn, serializer=JSONSerializer) for name in QUEUES]
    with conn.pipeline(transaction=False) as p:  # one round trip per beat (the heartbeat thread runs this)
        for queue in queues:
            p.zrange(queue.started_job_registry.key, 0, -1)
            p.lrange(queue.intermediate_queue_key, 0, -1)
        got = p.execute()
    if not any(got):
        return 0
    sec, usec = lc.r.time()
    now = sec + usec / 1e6
    ttl = _settings().lease_ttl_s
    requeued = 0
    for i, queue in enumerate(queues):
        ids = {m.decode().split(":", 1)[0] for m in got[2 * i]} | {m.decode() for m in got[2 * i + 1]}
        for job_id in ids:
            if not store.JOB_ID_RE.match(job_id):
                continue
            rec = lc.r.hgetall(store.k_job(job_id))
            if rec.get("status") != "queued":
                continue  # started (the lease covers it), ended, or gone
            worker = (lc.r.hget(f"rq:job:{job_id}", "worker_name") or "").strip()
            if worker:
                beat = lc.r.zscore(store.K_WORKERS, worker)
                if beat is not None and beat >= now - ttl:
                    continue  # its worker lives: it is about to start it
            elif lc.r.set(f"{REDIS_PREFIX}retry:seen:{job_id}", "1", nx=True, ex=ttl * 10):
                continue  # first sight of a job no worker prepared: give its worker time
            elif lc.r.ttl(f"{REDIS_PREFIX}retry:seen:{job_id}") > ttl * (10 - UNSTARTED_GRACE_LEASES):
                continue
            job = JobRef.of(rec)
            reason = f"the worker {worker or '?'} that took this job died before starting it"
            attempt, limit = attempt_of(rec), max_attempts()
            rq_job = _rq_job(lc, job_id)
            if attempt >= limit or rq_job is None:
                _forget_runs(conn, queue, job_id)
                lc.finish(job, "failed", from_status="queued",
                          error=_final(reason, attempt, limit))
                continue
            if _transition(lc, job, ("queued",), attempt + 1, reason, False) == "requeued":
                _enqueue_again(lc, rq_job, reason)
                requeued += 1
    return requeued

