"""The API's view of jobs: create, read, list, cancel and delete records; enqueue worker functions by name.

Async (``redis.asyncio``) for our own records; RQ's enqueue uses a sync client in a thread. Nothing here
imports torch or the ``worker`` package: jobs are enqueued as ``"worker.jobs.run_erasure"`` etc.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aredis
from rq import Queue
from rq.serializers import JSONSerializer
from starlette.concurrency import run_in_threadpool

from app.auth import KeyStore
from erasepro_core.io import json_or_none
from erasepro_jobs import retry, store
from erasepro_jobs.evaluations import evaluation_brief, k_evaluations
from erasepro_jobs.events import k_events
from erasepro_jobs.lifecycle import JobRef, Lifecycle
from erasepro_jobs.listing import LIST_CHUNK, LIST_SCAN_BUDGET, ListingIndex
from erasepro_jobs.registry import Registry
from erasepro_jobs.settings import (
    ERASE_FUNC,
    ERASE_QUEUE,
    EVALUATE_FUNC,
    EXPORT_FUNC,
    GENERATE_FUNC,
    GENERATE_QUEUE,
    HEAVY_QUEUE,
    Settings,
)
from erasepro_jobs.storage import ObjectInfo, Storage, open_storage
from erasepro_jobs.usage import Usage, check_quota, tenant_usage, usage_view
from erasepro_jobs.webhooks import k_deliveries

log = logging.getLogger("erasepro.api")

BLOCK_SLICE_S = 2.0
ENDPOINT_OPS = ("create", "all", "get", "update", "delete", "rotate")


class IdempotencyConflict(Exception):
    """The Idempotency-Key was already used with a different request body."""


class TooManyJobs(Exception):
    """The tenant already has its limit of queued + running jobs."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"this tenant already has {limit} queued or running jobs (the server's limit); wait for "
                         "one to finish or cancel one")


@dataclass
class Service:
    """Everything a request handler needs; one per API process."""

    settings: Settings
    registry: Registry
    keys: KeyStore
    r: aredis.Redis
    rq_conn: redis.Redis
    lifecycle: Lifecycle
    storage: Storage
    manifests: store.ManifestCache = field(default_factory=store.ManifestCache)

    @classmethod
    def create(cls, settings: Settings) -> Service:
        if not settings.redis_url:
            raise RuntimeError("REDIS_URL is not set: run `erasepro serve` (embedded Redis) or point REDIS_URL "
                               "at your Redis server")
        r = aredis.Redis.from_url(settings.redis_url, decode_responses=True, health_check_interval=30)
        rq_conn = redis.Redis.from_url(settings.redis_url)
        # transitions run on a sync client in a thread (one implementation for API, workers and reaper)
        sync = redis.Redis.from_url(settings.redis_url, decode_responses=True, health_check_interval=30)
        storage = open_storage(settings)
        return cls(settings=settings, registry=Registry(settings.base_models_file, settings.include_bundled),
                   keys=KeyStore(settings.keys_file, settings.api_keys_env, settings.admin_keys_env), r=r,
                   rq_conn=rq_conn,
                   lifecycle=Lifecycle(sync, settings.data_dir, storage), storage=storage)

    async def close(self) -> None:
        await self.r.aclose()
        self.rq_conn.close()
        self.lifecycle.r.close()

    # ----------------------------------------------------------------------------------------- health
    async def workers_alive(self) -> int:
        """Workers whose heartbeat is younger than the lease TTL (by the Redis server's clock)."""
        sec, usec = await self.r.time()
        return int(await self.r.zcount(store.K_WORKERS, sec + usec / 1e6 - self.settings.lease_ttl_s, "+inf"))

    # ------------------------------------------------------------------------------------------ create
    async def create_job(self, *, kind: str, tenant: str, fields: dict[str, Any], idempotency_key: str | None = None,
                         body_hash: str = "", limited: bool = True) -> tuple[str, bool]:
        """Create a record; returns ``(job id, created)``. ``created`` is False for an idempotent replay.

        Raises :class:`IdempotencyConflict` (same key, other body) and :class:`TooManyJobs` (``limited`` jobs
        count against the tenant's queued + running limit)."""
        job = JobRef(store.new_job_id(), kind, tenant, str(fields.get("erasure_id") or ""))
        limit = self.settings.active_limit(tenant) if limited else 0
        if not (idempotency_key and await self.r.exists(store.k_idem(tenant, idempotency_key))):
            await self.check_storage(tenant)  # a replay is not new work; anything else writes to the store
        existing = await run_in_threadpool(
            self.lifecycle.create, job, fields=fields, created=store.now(), idem_key=idempotency_key,
            body_hash=body_hash, idem_ttl_s=self.settings.idempotency_ttl_s, limit=limit,
            data={"base_model": fields.get("base_model", ""), **({"metadata": fields["metadata"]}
                                                                 if fields.get("metadata") else {})})
        job_id, key = job.id, store.k_job(job.id)
        if existing == "limit":
            raise TooManyJobs(limit)
        if existing:
            old_id, _, old_hash = existing.partition("|")
            if old_hash != body_hash:
                raise IdempotencyConflict(old_id)
            return old_id, False
        if kind != "erasure":
            await self.r.expire(key, self.settings.result_ttl_s)
        return job_id, True

    async def check_storage(self, tenant: str) -> Usage:
        """The tenant's stored bytes; :class:`~erasepro_jobs.usage.QuotaExceeded` (429) at or past its quota."""
        return await run_in_threadpool(check_quota, self.storage, tenant, self.settings.tenant_storage)

    async def usage(self, tenant: str) -> dict[str, Any]:
        """``GET /v1/usage``: stored bytes by kind, active jobs by kind, and the limits."""
        stored = await run_in_threadpool(tenant_usage, self.storage, tenant)
        ids = list(await self.r.smembers(store.k_active(tenant)))
        active: dict[str, int] = {}
        if ids:
            async with self.r.pipeline(transaction=False) as p:
                for job_id in ids:
                    p.hmget(store.k_job(job_id), "kind", "status")
                recs = await p.execute()
            for kind, status in recs:
                if status in store.ACTIVE:
                    active[kind or "erasure"] = active.get(kind or "erasure", 0) + 1
        return usage_view(stored, self.settings.tenant_storage, active, self.settings.active_limit(tenant),
                          self.settings)

    # Idempotency keys also live in the artifact store, so that a replay after a Redis flush finds a finished
    # erasure.

    async def _durable_replay(self, tenant: str, idempotency_key: str, body_hash: str) -> str | None:
        """The job a durable idempotency record names, if Redis forgot the key and the job is still visible."""
        if await self.r.exists(store.k_idem(tenant, idempotency_key)):
            return None
        rec = await run_in_threadpool(store.read_idem_record, self.storage, tenant, store.idem_hash(idempotency_key))
        if not rec or store.now() - float(rec.get("created_at", 0)) > self.settings.idempotency_ttl_s:
            return None
        old_id = str(rec.get("id", ""))
        if not store.JOB_ID_RE.match(old_id) or await self.erasure(tenant, old_id) is None:
            return None  # the job was deleted, or lost with the queue: a new one is right
        if rec.get("body_hash") != body_hash:
            raise IdempotencyConflict(old_id)
        await self.r.set(store.k_idem(tenant, idempotency_key), f"{old_id}|{body_hash}", nx=True,
                         ex=self.settings.idempotency_ttl_s)
        return old_id

    def _enqueue_sync(self, queue: str, func: str, job_id: str, kwargs: dict[str, Any], timeout: int,
                      at_front: bool = False) -> None:
        q = Queue(queue, connection=self.rq_conn, serializer=JSONSerializer)
        q.enqueue_call(func, kwargs=kwargs, job_id=job_id, timeout=timeout,
                       result_ttl=self.settings.result_ttl_s, failure_ttl=7 * 24 * 3600,
                       description=f"{func} {job_id}", at_front=at_front)

    async def enqueue(self, queue: str, func: str, job_id: str, kwargs: dict[str, Any], timeout: int,
                      at_front: bool = False) -> None:
        """Enqueue ``func`` (a dotted name, imported only by the worker) under our job id (``at_front``: ahead of
        the jobs already queued, see :meth:`first_in_lane`)."""
        try:
            await run_in_threadpool(self._enqueue_sync, queue, func, job_id, kwargs, timeout, at_front)
        except Exception as exc:
            rec = await self.r.hgetall(store.k_job(job_id))
            if rec:
                await run_in_threadpool(self.lifecycle.finish, JobRef.of(rec), "failed", from_status="queued",
                                        error=f"could not enqueue: {exc}")
            raise

    async def first_in_lane(self, tenant: str, job_id: str, kind: str = "erasure") -> bool:
        """True when ``tenant`` has no other queued job of ``kind``: such a job goes to the front of its queue.

        Fairness between tenants: a tenant's first waiting job overtakes other tenants' backlogs, so a tenant
        with one erasure waits for at most one job per other tenant with a waiting job (and the running one),
        never behind another tenant's whole backlog; a tenant's own jobs keep their order."""
        others = [j for j in await self.r.smembers(store.k_active(tenant)) if j != job_id]
        if not others:
            return True
        async with self.r.pipeline(transaction=False) as p:
            for other in others:
                p.hmget(store.k_job(other), "kind", "status")
            recs = await p.execute()
        return not any(k == kind and st == "queued" for k, st in recs)

    async def submit_erasure(self, *, tenant: str, base_model: str, spec: dict, request: dict, timeout: int,
                             idempotency_key: str | None, body_hash: str,
                             metadata: dict[str, str] | None = None,
                             webhook: dict[str, Any] | None = None) -> tuple[str, bool]:
        """``webhook``: ``{"webhook", "webhook_events", "webhook_secret"}`` stored in the record (never shown)."""
        if idempotency_key:
            replayed = await self._durable_replay(tenant, idempotency_key, body_hash)
            if replayed:
                return replayed, False
        job_id, created = await self.create_job(
            kind="erasure", tenant=tenant, idempotency_key=idempotency_key, body_hash=body_hash,
            fields={"base_model": base_model, "method": spec.get("method", "erasepro"), "spec": spec,
                    "request": request, "timeout_s": timeout, "metadata": metadata or {}, **(webhook or {})})
        if created and idempotency_key:
            await run_in_threadpool(store.write_idem_record, self.storage, tenant, store.idem_hash(idempotency_key),
                                    {"id": job_id, "body_hash": body_hash, "created_at": store.now()})
        if created:
            created_at = await self.r.hget(store.k_job(job_id), "created_at")
            await self.enqueue(ERASE_QUEUE, ERASE_FUNC, job_id, {
                "job_id": job_id, "tenant": tenant, "base_model": base_model, "spec": spec,
                "created_at": float(created_at or store.now()), "metadata": metadata or {}}, timeout,
                at_front=await self.first_in_lane(tenant, job_id))
        return job_id, created

    async def submit_generation(self, *, tenant: str, base_model: str, erasure_id: str | None,
                                params: dict) -> str:
        job_id, _ = await self.create_job(kind="generation", tenant=tenant, fields={
            "base_model": base_model, "erasure_id": erasure_id or "", "params": params})
        await self.enqueue(GENERATE_QUEUE, GENERATE_FUNC, job_id, {
            "job_id": job_id, "tenant": tenant, "base_model": base_model, "erasure_id": erasure_id,
            "params": params}, self.settings.generate_timeout_s)
        return job_id

    async def request_export(self, tenant: str, erasure_id: str, base_model: str, fmt: str = "diffusers") -> str:
        """The id of the job exporting this checkpoint as a ``fmt`` tar (diffusers, lora, kohya; started now unless
        running)."""
        key = store.k_export(erasure_id, fmt)
        existing = await self.r.get(key)
        if existing:
            return existing
        # exports count against the tenant's active jobs (each writes a file the size of a model)
        job_id, _ = await self.create_job(kind="export", tenant=tenant, fields={
            "base_model": base_model, "erasure_id": erasure_id, "format": fmt})
        if not await self.r.set(key, job_id, nx=True, ex=self.settings.export_timeout_s + 600):
            await self.r.delete(store.k_job(job_id))
            return await self.r.get(key) or job_id
        await self.enqueue(HEAVY_QUEUE, EXPORT_FUNC, job_id, {
            "job_id": job_id, "tenant": tenant, "erasure_id": erasure_id, "format": fmt},
            self.settings.export_timeout_s)
        return job_id

    async def forget_export(self, erasure_id: str, fmt: str) -> None:
        """Drop the pointer to an erasure's export job (it ended badly or expired), so the next request starts one."""
        await self.r.delete(store.k_export(erasure_id, fmt))

    async def submit_evaluation(self, *, tenant: str, erasure_id: str, base_model: str, budgets: dict[str, int],
                                seed: int, targets: list[str], steps: int, timeout: int, judge: str = "shapes",
                                samples: int = 0, items: list[dict[str, Any]] | None = None,
                                threat: dict[str, Any] | None = None) -> tuple[str, dict[str, str] | None]:
        """Create an evaluation job of a succeeded erasure, list it under the erasure, enqueue it: its id and
        record. ``items``/``samples``: an image judge's prompts and images per prompt (attacks: none);
        ``threat``: the threat-model evaluation's settings (``threat_models``, ``per_category``, ...)."""
        fields = {"budgets": budgets, "seed": seed, "targets": targets, "steps": steps, "timeout_s": timeout}
        eval_id, _ = await self.create_job(kind="evaluation", tenant=tenant, fields={
            "erasure_id": erasure_id, "base_model": base_model, **fields, "judge": judge, "samples": samples,
            **({"threat_models": threat["threat_models"]} if threat else {})})
        index = k_evaluations(erasure_id)
        await self.r.rpush(index, eval_id)
        await self.r.expire(index, self.settings.result_ttl_s)
        created_at = await self.r.hget(store.k_job(eval_id), "created_at")
        image_judge = {"judge": judge, "items": items, "samples": samples} if items is not None else {}
        if threat:
            image_judge = {"judge": judge, "threat": threat}
        await self.enqueue(HEAVY_QUEUE, EVALUATE_FUNC, eval_id, {
            "job_id": eval_id, "tenant": tenant, "erasure_id": erasure_id, **fields, **image_judge,
            "created_at": float(created_at or store.now())}, timeout + self.settings.hard_timeout_grace_s)
        return eval_id, await self.record(eval_id, tenant, "evaluation")

    async def evaluation_ids(self, erasure_id: str, last: int) -> list[str]:
        """The ids of the erasure's ``last`` most recent evaluation jobs (still in Redis), oldest first."""
        return list(dict.fromkeys(await self.r.lrange(k_evaluations(erasure_id), -last, -1)))

    # ------------------------------------------------------------------------------ events and webhooks
    async def events(self, tenant: str, subject: str, after: str | None, limit: int) -> list[dict[str, Any]]:
        """The erasure's events, oldest first, strictly after ``after``."""
        return await run_in_threadpool(self.lifecycle.events, tenant, subject, after, limit)

    async def wait_event(self, subject: str, after: str | None, block_ms: int) -> None:
        """Return when the erasure's stream has an entry after ``after`` (at once if it has), or after ``block_ms``."""
        await self.r.xread({k_events(subject): after or "0-0"}, count=1, block=block_ms)

    async def deliveries(self, subject: str) -> list[dict[str, Any]]:
        """Every recorded attempt to deliver the erasure's events, oldest first."""
        return [json.loads(raw) for raw in await self.r.lrange(k_deliveries(subject), 0, -1)]

    async def endpoints(self, op: str, tenant: str, *args: Any, **kwargs: Any) -> Any:
        """``Endpoints.<op>(tenant, …)`` (create, all, get, update, delete, rotate) off the event loop."""
        if op not in ENDPOINT_OPS:
            raise ValueError(f"not an endpoint operation: {op!r}")
        return await run_in_threadpool(getattr(self.lifecycle.endpoints, op), tenant, *args, **kwargs)

    # -------------------------------------------------------------------------------------------- read
    async def manifest(self, tenant: str, job_id: str, info: ObjectInfo | None = None) -> dict | None:
        """The erasure's checkpoint manifest from the artifact store (``None``: no complete checkpoint); ``info``
        (the manifest object's, from a listing) saves asking the store for it again."""
        m = await run_in_threadpool(self.manifests.read, self.storage, tenant, job_id, info)
        if m is not None and m.get("tenant") != tenant:
            return None
        return m

    async def record(self, job_id: str, tenant: str, kind: str) -> dict[str, str] | None:
        """The caller's record of that kind, reconciled with the lease; ``None`` if absent or not theirs."""
        if not store.JOB_ID_RE.match(job_id):
            return None
        return await self._reconciled(await self.r.hgetall(store.k_job(job_id)), tenant, kind)

    async def _reconciled(self, rec: dict[str, str], tenant: str, kind: str) -> dict[str, str] | None:
        """``rec`` (as read from Redis) if it is the caller's and of that kind, its lease checked when running."""
        if not rec or rec.get("tenant") != tenant or rec.get("kind") != kind:
            return None
        if rec.get("status") == "running":
            rec = await self._check_lease(rec, tenant)
        return rec

    async def _check_lease(self, rec: dict[str, str], tenant: str) -> dict[str, str]:
        """A running job whose lease is gone (the reaper records it on its timer; a read does not wait for it)."""
        if await self.r.exists(store.k_lease(rec["id"])):
            return rec
        await run_in_threadpool(self.lifecycle.lease_lost, rec)
        return await self.r.hgetall(store.k_job(rec["id"])) or rec

    async def erasure(self, tenant: str, job_id: str) -> dict | None:
        """The erasure view (see :func:`erasure_view`), from Redis and/or the manifest in the artifact store."""
        if not store.JOB_ID_RE.match(job_id):
            return None
        return await self._erasure_view(tenant, job_id, await self.record(job_id, tenant, "erasure"))

    async def _erasure_view(self, tenant: str, job_id: str, rec: dict[str, str] | None) -> dict | None:
        """The view from the caller's reconciled record (or ``None``) and, when needed, the manifest."""
        manifest = None
        if rec is None or rec.get("status") == "succeeded":
            manifest = await self.manifest(tenant, job_id)
        if rec is None and manifest is None:
            return None
        return erasure_view(rec, manifest)

    async def list_erasures(self, tenant: str, limit: int, cursor: tuple[float, str] | None, *,
                            status: str | None = None, metadata: dict[str, str] | None = None,
                            budget: int = LIST_SCAN_BUDGET) -> tuple[list[dict], tuple[float, str] | None]:
        """Newest first, those in ``status`` whose metadata has every pair of ``metadata``; returns the page and
        the cursor of the next one (``None``: the end).

        Walks the Redis index from ``cursor`` and examines at most ``budget`` entries: with a selective filter
        the page may come back short, or empty, with a cursor that continues the walk. The index covers the
        artifact store as well (see :meth:`ensure_index`), so a flushed Redis loses no finished checkpoint."""
        await self.ensure_index(tenant)
        key = store.k_index(tenant)
        top: float | str = "+inf" if cursor is None else cursor[0]
        items: list[dict] = []
        examined = offset = 0
        last: tuple[float, str] | None = None
        while examined < budget and len(items) < limit:
            # never more rows than could still match: the views of one chunk are built concurrently (on S3 each
            # succeeded job's manifest costs a HEAD), and none is built past ``limit``
            rows = await self.r.zrevrangebyscore(key, top, "-inf", start=offset, withscores=True,
                                                 num=min(LIST_CHUNK, budget - examined, limit - len(items)))
            if not rows:
                return items, None  # walked to the end
            offset += len(rows)
            # ties with the cursor's score that the last page already covered come first: skip them
            rows = [(jid, score) for jid, score in rows if cursor is None or (score, jid) < cursor]
            if not rows:
                continue
            async with self.r.pipeline(transaction=False) as p:
                for jid, _ in rows:
                    p.hgetall(store.k_job(jid))
                recs = await p.execute()
            views = await asyncio.gather(*(self._listed_view(tenant, jid, rec, status, metadata or {})
                                           for (jid, _), rec in zip(rows, recs, strict=True)))
            items += [v for v in views if v is not None]
            examined += len(rows)
            last = (rows[-1][1], rows[-1][0])
        # stopped early: is there anything after the last entry examined? (no cursor to an empty end page)
        more = await self.r.zrevrangebyscore(key, top, "-inf", start=offset, num=1)
        return items, (last if more and last is not None else None)

    async def _listed_view(self, tenant: str, job_id: str, rec: dict[str, str], status: str | None,
                           metadata: dict[str, str]) -> dict | None:
        """The view of one index entry if it passes the filter; the record rules out most non-matches before
        the manifest is read (the expensive part on S3)."""
        rec = await self._reconciled(rec, tenant, "erasure")
        if rec:
            seen = rec.get("status")
            # a record's status is the view's, except that "succeeded" without a manifest shows as "failed"
            if status and seen and seen != status and not (seen == "succeeded" and status == "failed"):
                return None
            meta = json_or_none(rec.get("metadata"))
            if meta and any(meta.get(k) != v for k, v in metadata.items()):
                return None
        view = await self._erasure_view(tenant, job_id, rec)
        if view is None:
            return None  # deleted, or lost with a flushed Redis before it finished
        meta = view.get("metadata") or {}
        if (status and view["status"] != status) or any(meta.get(k) != v for k, v in metadata.items()):
            return None
        return view

    async def ensure_index(self, tenant: str) -> None:
        """Make the tenant's listing index cover every checkpoint in the artifact store (see
        :meth:`erasepro_jobs.listing.ListingIndex.ensure`)."""
        await ListingIndex(self.r, self.storage, self.manifests).ensure(tenant)

    # ----------------------------------------------------------------------------------------- cancel
    async def cancel(self, tenant: str, job_id: str) -> str:
        """``cancelled`` | ``cancelling`` | the terminal status seen | ``missing``."""
        rec = await self.r.hgetall(store.k_job(job_id))
        if not rec:
            return "missing"
        outcome = await run_in_threadpool(self.lifecycle.cancel, JobRef.of(rec))
        if outcome == "cancelled":
            await run_in_threadpool(self._rq_cancel, job_id)
        return outcome

    def _rq_cancel(self, job_id: str) -> None:
        from rq.job import Job

        try:
            job = Job.fetch(job_id, connection=self.rq_conn, serializer=JSONSerializer)
            if not job.is_canceled:
                job.cancel()
        except Exception as exc:  # the worker also skips cancelled jobs, so this is best effort
            log.info("rq cancel of %s: %s", job_id, exc)

    async def delete(self, tenant: str, job_id: str) -> None:
        """Remove a finished erasure: its artifacts (manifest first, so never half-served) and record. Under the
        checkpoint's lock, so an export or evaluation finishing meanwhile cannot write its manifest back."""
        async with self.r.lock(store.k_checkpoint_lock(job_id), timeout=store.CHECKPOINT_LOCK_TTL_S,
                               blocking_timeout=store.CHECKPOINT_LOCK_TTL_S):
            await run_in_threadpool(store.delete_checkpoint, self.storage, tenant, job_id)
        await run_in_threadpool(self.lifecycle.forget, tenant, job_id)
        idem = await self.r.hget(store.k_job(job_id), "idem")
        async with self.r.pipeline(transaction=True) as p:
            p.delete(store.k_job(job_id), *(store.k_export(job_id, f) for f in store.EXPORT_FILES),
                     store.k_lease(job_id))
            if idem:  # a replay of its Idempotency-Key starts a new job (documented)
                p.delete(store.k_idem_hashed(tenant, idem))
            p.zrem(store.k_index(tenant), job_id)
            await p.execute()
        if idem:
            await run_in_threadpool(self.storage.delete, store.idem_object(tenant, idem))

    async def delete_generation(self, job_id: str) -> None:
        """Remove a finished generation's record and images."""
        await self.r.delete(store.k_job(job_id), store.k_images(job_id), store.k_done(job_id))

    # --------------------------------------------------------------------------------------- results
    async def wait_done(self, job_id: str, timeout_s: float) -> None:
        """Block (asynchronously) until the worker signals the job ended, or ``timeout_s`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (remaining := deadline - loop.time()) > 0:
            # short slices: the client's socket timeout (5 s by default) must not cut a blocking read
            got = await self.r.blpop([store.k_done(job_id)], timeout=min(remaining, BLOCK_SLICE_S))
            if got:  # leave the signal for any other waiter
                await self.r.rpush(store.k_done(job_id), got[1])
                await self.r.expire(store.k_done(job_id), 600)
                return

    async def images(self, job_id: str) -> list[str]:
        return await self.r.lrange(store.k_images(job_id), 0, -1)


# ------------------------------------------------------------------------------------------------ views
def erasure_view(rec: dict[str, str] | None, manifest: dict | None) -> dict:
    """One JSON shape for an erasure, whether it is live in Redis, on disk only, or both."""
    rec = rec or {}
    m = manifest or {}
    job_id = rec.get("id") or m["id"]
    status = rec.get("status") or ("succeeded" if manifest else "failed")
    if status == "succeeded" and manifest is None:
        status = "failed"  # recorded as done but the files are gone (deleted out of band)
        rec = {**rec, "error": "the checkpoint files are missing on the server"}
    spec = json_or_none(rec.get("spec")) or m.get("spec")
    progress = json_or_none(rec.get("progress")) or ({"stage": "done", "fraction": 1.0} if manifest else {})
    view: dict[str, Any] = {
        "id": job_id,
        "status": status,
        "base_model": rec.get("base_model") or (m.get("base_model") or {}).get("name", ""),
        "method": rec.get("method") or (spec or {}).get("method", "erasepro"),
        "created_at": store.iso(rec.get("created_at") or m.get("created_at")),
        "started_at": store.iso(rec.get("started_at") or m.get("started_at")),
        "finished_at": store.iso(rec.get("finished_at") or m.get("finished_at")),
        "progress": {"stage": progress.get("stage"), "fraction": float(progress.get("fraction") or 0.0)},
        "cancel_requested": rec.get("cancel_requested") == "1",
        "report": m.get("report") if manifest else json_or_none(rec.get("report")),
        "error": rec.get("error") or None,
        "attempt": retry.attempt_of(rec),
        "timings": m.get("timings") if manifest else json_or_none(rec.get("timings")),
        "spec": spec,
        "metadata": json_or_none(rec.get("metadata")) or m.get("metadata") or {},
        "webhook": rec.get("webhook") or None,
        "webhook_events": json_or_none(rec.get("webhook_events")),
        "base_fingerprint": (m.get("base_model") or {}).get("fingerprint"),
        "artifacts": {name: {"sha256": f["sha256"], "size": f["size"]} for name, f in (m.get("files") or {}).items()},
        "evaluations": [evaluation_brief(e) for e in m.get("evaluations") or [] if isinstance(e, dict)],
        "links": {"self": f"/v1/erasures/{job_id}", "evaluations": f"/v1/erasures/{job_id}/evaluations"},
    }
    if status == "succeeded":
        view["links"].update({
            "checkpoint": f"/v1/erasures/{job_id}/checkpoint?format=delta",
            "checkpoint_diffusers": f"/v1/erasures/{job_id}/checkpoint?format=diffusers",
            "generate": f"/v1/erasures/{job_id}/generate",
        })
    return view


def generation_view(rec: dict[str, str]) -> dict:
    job_id = rec["id"]
    view = {
        "id": job_id, "status": rec.get("status", "queued"), "base_model": rec.get("base_model", ""),
        "erasure_id": rec.get("erasure_id") or None, "created_at": store.iso(rec.get("created_at")),
        "started_at": store.iso(rec.get("started_at")), "finished_at": store.iso(rec.get("finished_at")),
        "error": rec.get("error") or None, "timings": json_or_none(rec.get("timings")),
        "links": {"self": f"/v1/generations/{job_id}", "images": f"/v1/generations/{job_id}/images"},
    }
    if rec.get("guard"):
        view["guard"] = json_or_none(rec.get("guard"))
    return view
