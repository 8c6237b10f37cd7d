"""Every job transition in one place: queued -> running -> succeeded | failed | cancelled, progress, export, generation.

Each transition is one Lua script, so the record change and its event are one atomic step in Redis: the script
checks the status it starts from, writes the record, and appends the event to the *subject's* stream (see
:mod:`erasepro_jobs.events`: the event types, the log and its durable copy). The event is then copied to disk and
queued for the webhooks that take it (:mod:`erasepro_jobs.dispatch`). The API, the workers, ``erasepro serve``'s
shutdown and the reaper all call this module (sync client; the API calls it in a thread) - no other code writes a
job's status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from erasepro_jobs import metrics, retry, store
from erasepro_jobs.dispatch import WebhookDispatch
from erasepro_jobs.events import MAX_EVENTS, EventLog, dumps, event_type, k_events
from erasepro_jobs.settings import REDIS_PREFIX
from erasepro_jobs.storage import FileStorage, Storage, StorageError

log = logging.getLogger("erasepro.lifecycle")

K_RUNNING = f"{REDIS_PREFIX}running"
PROGRESS_EVENT_STEP = 0.1  # a progress event per stage change or 10 %; the record itself moves by 1 %

LEASE_LOST_REASON = "the worker running this job stopped responding (process killed or machine lost)"
LEASE_LOST_MSG = f"{LEASE_LOST_REASON}; no checkpoint was produced - submit the job again"


@dataclass(frozen=True)
class JobRef:
    """Who a transition is about: the job, its kind, its tenant, and the erasure whose log records it."""

    id: str
    kind: str
    tenant: str
    erasure_id: str = ""

    @property
    def subject(self) -> str:
        return self.id if self.kind == "erasure" or not self.erasure_id else self.erasure_id

    @classmethod
    def of(cls, rec: dict[str, str]) -> JobRef:
        return cls(rec["id"], rec.get("kind", "erasure"), rec.get("tenant", ""), rec.get("erasure_id") or "")


# ----------------------------------------------------------------------------------------------- scripts
# Every script: KEYS[1] the job, KEYS[2] the subject's event stream; ARGV[1] now, ARGV[2] event type ('' for
# none), ARGV[3] event data (JSON). Returns {result, event id or ''}.
_EMIT = f"""
local JOB_PREFIX = '{store.k_job("")}'
local function emit()
  if ARGV[2] == '' then return '' end
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', {MAX_EVENTS}, '*', 'type', ARGV[2], 'data', ARGV[3],
                    'at', ARGV[1])
end
local function tail(from)
  local out = {{}}
  for i = from, #ARGV do out[#out + 1] = ARGV[i] end
  return out
end
local function signal_done(key, outcome)
  redis.call('RPUSH', key, outcome)
  redis.call('EXPIRE', key, 600)
end
"""

# Create a record (and its index entry) unless the Idempotency-Key already names a job ("{id}|{body hash}"), or
# the tenant has its limit of queued/running jobs ('limit'; ids of ended jobs are pruned from the set first).
# KEYS: job, events, index, idem, active. ARGV[4..]: id, body hash, idem ttl, use idem, limit, field/value pairs.
_CREATE = """
if ARGV[7] == '1' then
  local seen = redis.call('GET', KEYS[4])
  if seen then return {seen, ''} end
end
local limit = tonumber(ARGV[8])
if limit > 0 then
  if redis.call('SCARD', KEYS[5]) >= limit then
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do
      local st = redis.call('HGET', JOB_PREFIX .. id, 'status')
      if st ~= 'queued' and st ~= 'running' then redis.call('SREM', KEYS[5], id) end
    end
    if redis.call('SCARD', KEYS[5]) >= limit then return {'limit', ''} end
  end
  redis.call('SADD', KEYS[5], ARGV[4])
end
if ARGV[7] == '1' then
  redis.call('SET', KEYS[4], ARGV[4] .. '|' .. ARGV[5], 'EX', tonumber(ARGV[6]))
end
redis.call('HSET', KEYS[1], unpack(tail(9)))
if KEYS[3] ~= KEYS[1] then redis.call('ZADD', KEYS[3], tonumber(ARGV[1]), ARGV[4]) end
return {'', emit()}
"""

# Worker takes a queued job. KEYS: job, events, lease, running. ARGV[4..]: worker, lease ttl, then the initial
# field/value pairs (used only when the record is missing: Redis was flushed between enqueue and start).
_START = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then
  redis.call('HSET', KEYS[1], unpack(tail(6)))
  st = 'queued'
end
if st ~= 'queued' then return {st, ''} end
redis.call('SET', KEYS[3], ARGV[4], 'EX', tonumber(ARGV[5]))
redis.call('SADD', KEYS[4], redis.call('HGET', KEYS[1], 'id'))
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1], 'worker', ARGV[4])
return {'running', emit()}
"""

# Progress of a running job. ARGV[4]: the progress JSON.
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return {'', ''} end
redis.call('HSET', KEYS[1], 'progress', ARGV[4])
return {'ok', emit()}
"""

# End a job. KEYS: job, events, lease, done, running. ARGV[4..]: outcome, statuses it may end from
# (space-separated), 'lease' to require the lease to be gone (the reaper), then field/value pairs.
# 'succeeded' is refused (returns 'cancel_requested') when cancellation was requested; a status not in the list
# is returned as seen (e.g. the reaper already declared the job lost: the worker then removes what it wrote);
# 'missing': Redis was flushed: nothing is recreated, the manifest on disk is the record.
_FINISH = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', ''} end
if not string.find(' ' .. ARGV[5] .. ' ', ' ' .. st .. ' ', 1, true) then return {st, ''} end
if ARGV[6] == 'lease' and redis.call('EXISTS', KEYS[3]) == 1 then return {'leased', ''} end
if ARGV[4] == 'succeeded' and redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  return {'cancel_requested', ''}
end
local fields = {'status', ARGV[4], 'finished_at', ARGV[1]}
for _, v in ipairs(tail(7)) do fields[#fields + 1] = v end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[5], redis.call('HGET', KEYS[1], 'id'))
signal_done(KEYS[4], ARGV[4])
return {'ok', emit()}
"""

# Cancel: a queued job is cancelled at once, a running one is asked to stop (the worker checks the flag).
# KEYS: job, events, done.
_CANCEL = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', ''} end
if st == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1], 'cancel_requested', '1',
             'error', 'cancelled before it started')
  signal_done(KEYS[3], 'cancelled')
  return {'cancelled', emit()}
end
if st == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  return {'cancelling', ''}
end
return {st, ''}
"""

SCRIPTS = {name: _EMIT + body for name, body in
           (("CREATE", _CREATE), ("START", _START), ("PROGRESS", _PROGRESS), ("FINISH", _FINISH),
            ("CANCEL", _CANCEL))}


class Lifecycle:
    """The transitions, over a sync Redis client (``decode_responses=True``) and the data dir; ``log`` reads the
    event log, ``dispatch`` (and its ``endpoints``) the webhook side."""

    def __init__(self, r: redis.Redis, data_dir: Path, storage: Storage | None = None) -> None:
        self.r = r
        self.data_dir = Path(data_dir)
        # the artifact store, where a lost job's checkpoint may already be complete (see lease_lost)
        self.storage = storage if storage is not None else FileStorage(self.data_dir)
        self._scripts = {name: r.register_script(src) for name, src in SCRIPTS.items()}
        self.log = EventLog(r, self.storage)
        self.dispatch = WebhookDispatch(r)
        self.endpoints = self.dispatch.endpoints

    def _run(self, name: str, job: JobRef, what: str, data: dict[str, Any], keys: list[str],
             args: list[Any]) -> str:
        at = store.now()
        # a generation of the base model has no erasure to log it on (and no log of its own: it would outlive it)
        typ = event_type(job.kind, what) if what and (job.kind == "erasure" or job.erasure_id) else ""
        if typ and job.subject != job.id:
            data = {f"{job.kind}_id": job.id, **data}
        result, event_id = self._scripts[name](
            keys=[store.k_job(job.id), k_events(job.subject), *keys], args=[repr(at), typ, dumps(data), *args])
        if event_id:
            event = {"id": event_id, "type": typ, "created_at": at, "data": data}
            self.log.persist(job.tenant, job.subject, event)
            self.dispatch.queue(job.tenant, job.subject, event)
        return str(result)

    def pump_webhooks(self, now: float | None = None, batch: int = 100) -> int:
        """Enqueue the delivery jobs whose retry is due (every worker's heartbeat calls this); returns how many."""
        return self.dispatch.pump(now, batch)

    # ---------------------------------------------------------------------------------- transitions
    def create(self, job: JobRef, *, fields: dict[str, Any], created: float, idem_key: str | None,
               body_hash: str, idem_ttl_s: int, limit: int, data: dict[str, Any]) -> str:
        """'' (created) | 'limit' | ``"{id}|{body hash}"`` of the job the Idempotency-Key already names."""
        key = store.k_job(job.id)
        index = store.k_index(job.tenant) if job.kind == "erasure" else key
        idem = store.k_idem(job.tenant, idem_key) if idem_key else key
        payload = store.flatten({"id": job.id, "kind": job.kind, "tenant": job.tenant, "status": "queued",
                                 "created_at": repr(created), "cancel_requested": "0",
                                 "idem": store.idem_hash(idem_key) if idem_key else None, **fields})
        return self._run("CREATE", job, "created", data, [index, idem, store.k_active(job.tenant)],
                         [job.id, body_hash, idem_ttl_s, "1" if idem_key else "0", limit, *payload])

    def start(self, job: JobRef, worker: str, lease_ttl_s: int, initial: dict[str, Any]) -> str:
        """'running' when taken, else the status seen (cancelled, already handled)."""
        payload = store.flatten({"id": job.id, "kind": job.kind, "tenant": job.tenant, "status": "queued",
                                 "cancel_requested": "0", **initial})
        return self._run("START", job, "started", {"worker": worker}, [store.k_lease(job.id), K_RUNNING],
                         [worker, lease_ttl_s, *payload])

    def progress(self, job: JobRef, progress: dict[str, Any], *, event: bool) -> str:
        return self._run("PROGRESS", job, "progress" if event else "", progress, [], [dumps(progress)])

    def finish(self, job: JobRef, outcome: str, *, error: str | None = None, from_status: str = "running",
               require_lease_lost: bool = False, data: dict[str, Any] | None = None, **fields: Any) -> str:
        """End the job: 'ok', or why not (see ``_FINISH``)."""
        data = {**(data or {}), **({"error": error} if error else {})}
        result = self._run("FINISH", job, outcome, data,
                           [store.k_lease(job.id), store.k_done(job.id), K_RUNNING],
                           [outcome, from_status, "lease" if require_lease_lost else "",
                            *store.flatten({"error": error, **fields})])
        if result == "ok":
            self._ended(job, outcome, fields.get("timings"))
        return result

    def cancel(self, job: JobRef) -> str:
        """'cancelled' | 'cancelling' | the terminal status seen | 'missing'."""
        result = self._run("CANCEL", job, "cancelled", {"error": "cancelled before it started"},
                           [store.k_done(job.id)], [])
        if result == "cancelled":
            self._ended(job, "cancelled", None)
        return result

    def _ended(self, job: JobRef, status: str, timings: Any) -> None:
        """The metrics of a job that just ended (see :mod:`erasepro_jobs.metrics`); never raises."""
        try:
            started = self.r.hget(store.k_job(job.id), "started_at")
            run_s = store.now() - float(started) if started else None
        except (redis.RedisError, ValueError):
            run_s = None
        metrics.job_ended(self.r, job.kind, status, timings if isinstance(timings, dict) else None, run_s)

    # ---------------------------------------------------------------------------------------- reaper
    def reap(self) -> int:
        """Record the running jobs whose lease expired (their worker died): failed, or succeeded when the
        checkpoint was complete on disk before the worker died. Returns how many."""
        reaped = 0
        for job_id in self.r.smembers(K_RUNNING):
            if self.r.exists(store.k_lease(job_id)):
                continue
            rec = self.r.hgetall(store.k_job(job_id))
            if rec.get("status") != "running":
                self.r.srem(K_RUNNING, job_id)
                continue
            try:
                lost = self.lease_lost(rec)
            except StorageError as exc:  # cannot tell whether its checkpoint is complete: ask at the next tick
                log.warning("reaper: job %s: %s", job_id, exc)
                continue
            if lost == "ok":
                reaped += 1
        try:  # jobs a dead worker dequeued but never started (still 'queued')
            reaped += retry.reap_unstarted(self)
        except redis.RedisError as exc:
            log.warning("reaper: unstarted jobs: %s", exc)
        return reaped

    def lease_lost(self, rec: dict[str, str]) -> str:
        job = JobRef.of(rec)
        manifest = (store.read_manifest(self.storage, job.tenant, job.id) if job.kind == "erasure" else None)
        if manifest is not None:
            return self.finish(job, "succeeded", require_lease_lost=True, report=manifest.get("report"))
        return retry.requeue_or_fail(self, job, rec, LEASE_LOST_REASON, require_lease_lost=True)

    def release(self, worker_names: list[str], error: str, *, retry_jobs: bool = False) -> int:
        """Record failed (``retry_jobs``: re-queue while attempts are left, see :mod:`erasepro_jobs.retry`) the
        running jobs these (stopped) workers held, without waiting for their leases."""
        released = 0
        for job_id in self.r.smembers(K_RUNNING):
            if self.r.get(store.k_lease(job_id)) not in worker_names:
                continue
            rec = self.r.hgetall(store.k_job(job_id))
            if not rec:
                continue
            job = JobRef.of(rec)
            outcome = (retry.requeue_or_fail(self, job, rec, error) if retry_jobs
                       else self.finish(job, "failed", error=error))
            released += outcome == "ok"
        return released

    # ---------------------------------------------------------------------------------------- events
    def events(self, tenant: str, subject: str, after: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The subject's events, oldest first, strictly after ``after`` (see :meth:`EventLog.read`)."""
        return self.log.read(tenant, subject, after, limit)

    def forget(self, tenant: str, subject: str) -> None:
        """Drop a deleted erasure's event log and its webhook queues and deliveries."""
        self.dispatch.forget(subject)
        self.log.forget(tenant, subject)


__all__ = ["K_RUNNING", "LEASE_LOST_MSG", "MAX_EVENTS", "PROGRESS_EVENT_STEP", "SCRIPTS", "JobRef", "Lifecycle",
           "k_events"]
