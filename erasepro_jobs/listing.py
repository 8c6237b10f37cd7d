"""The listing index of a tenant's erasures (a Redis sorted set by creation time) and its rebuild from the
artifact store, plus the opaque cursors the list endpoints hand out.

Redis is the index; the artifact store is the durable record. A flush (or a Redis restarted empty) removes the
index and its marker together; the first listing after that rebuilds the index from one listing of the store.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass

import redis.asyncio as aredis

from erasepro_jobs import store
from erasepro_jobs.storage import Storage

log = logging.getLogger("erasepro.api")

LIST_SCAN_BUDGET = 500  # index entries one list request examines at most (a filtered page may come back short)
LIST_CHUNK = 100  # index entries read from Redis at a time
REINDEX_LOCK_TTL_S = 600  # a rebuilding process that dies frees the lock after this
REINDEX_WAIT_S = 20.0  # how long a listing waits for another process's rebuild before answering 503

# Compare-and-delete: release a lock only if it is still ours.
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Merge a rebuilt index. KEYS: lock, scratch, index, marker; ARGV: lock token, now. Does nothing when the lock is
# no longer ours: Redis was flushed during the rebuild (so what the rebuild saw may predate it), or it expired.
# Entries already in the index (jobs created meanwhile) keep theirs; MAX: both carry the same creation time.
_MERGE_INDEX = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('ZUNIONSTORE', KEYS[3], 2, KEYS[3], KEYS[2], 'AGGREGATE', 'MAX')
  redis.call('DEL', KEYS[2])
end
redis.call('SET', KEYS[4], ARGV[2])
return 1
"""


class IndexRebuilding(Exception):
    """Another API process is rebuilding the tenant's listing index (after Redis lost it); retry shortly."""

    def __init__(self, waited_s: float) -> None:
        self.waited_s = waited_s
        super().__init__(f"the erasure list is being rebuilt from the artifact store (waited {waited_s:g} s); "
                         "retry shortly")


@dataclass
class ListingIndex:
    """One tenant index's upkeep over an async Redis client, the artifact store and the manifest cache."""

    r: aredis.Redis
    storage: Storage
    manifests: store.ManifestCache

    async def ensure(self, tenant: str) -> None:
        """Make the tenant's listing index cover every checkpoint in the artifact store.

        Redis is the index; the artifact store is the durable record. A flush (or a Redis restarted empty)
        removes the index and its marker together; the first listing after that rebuilds the index from one
        listing of the store - once, under a lock, into a scratch key that one script merges into the index
        only if the lock is still ours (a flush during the rebuild removes the lock, and the rebuild starts
        over). Every other listing costs one EXISTS. Raises :class:`IndexRebuilding` when another process's
        rebuild takes longer than ``REINDEX_WAIT_S``."""
        if await self.r.exists(store.k_indexed(tenant)):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REINDEX_WAIT_S
        lock = store.k_reindex_lock(tenant)
        while True:
            token = secrets.token_hex(16)
            if await self.r.set(lock, token, nx=True, ex=REINDEX_LOCK_TTL_S):
                try:
                    if await self._rebuild_index(tenant, token):
                        return
                finally:
                    await self.r.eval(_RELEASE_LOCK, 1, lock, token)
                if loop.time() > deadline:
                    raise IndexRebuilding(REINDEX_WAIT_S)
                continue  # Redis lost our lock (flushed mid-rebuild): again, with the new state
            while await self.r.exists(lock):
                if await self.r.exists(store.k_indexed(tenant)):
                    return
                if loop.time() > deadline:
                    raise IndexRebuilding(REINDEX_WAIT_S)
                await asyncio.sleep(0.1)
            if await self.r.exists(store.k_indexed(tenant)):
                return

    async def _rebuild_index(self, tenant: str, token: str) -> bool:
        """One rebuild (see :meth:`ensure`); False when the lock was lost before the merge."""
        infos = await asyncio.to_thread(store.list_checkpoints, self.storage, tenant)

        def scores() -> dict[str, float]:
            out = {}
            for jid, info in infos.items():
                m = self.manifests.read(self.storage, tenant, jid, info)
                if m is not None and m.get("tenant") == tenant:
                    out[jid] = float(m.get("created_at") or 0.0)
            return out

        found = await asyncio.to_thread(scores)
        scratch = store.k_reindex_scratch(tenant)
        await self.r.delete(scratch)
        pairs = list(found.items())
        for i in range(0, len(pairs), 1000):
            await self.r.zadd(scratch, dict(pairs[i:i + 1000]))
        merged = await self.r.eval(_MERGE_INDEX, 4, store.k_reindex_lock(tenant), scratch, store.k_index(tenant),
                                   store.k_indexed(tenant), token, repr(store.now()))
        log.info("listing index of %s rebuilt from the artifact store: %d checkpoints%s", tenant, len(found),
                 "" if merged else " (Redis lost the lock meanwhile: again)")
        return bool(merged)


CURSOR_SCORE = r"[0-9]{1,20}(?:\.[0-9]{1,20})?(?:e[+-]?[0-9]{1,3})?"  # repr() of a non-negative float


def cursor_pattern(id_re: re.Pattern[str] = store.JOB_ID_RE) -> str:
    """The regular expression of every cursor over ids matching ``id_re``: the OpenAPI document states it, and
    every string it matches is a cursor (a position in the listing; it need not name an existing item)."""
    return f"^{CURSOR_SCORE}-{id_re.pattern.strip('^$')}$"


def encode_cursor(cursor: tuple[float, str]) -> str:
    """``<score>-<id>``: the last item's sort key (its score exactly, as ``repr``) and id."""
    return f"{cursor[0]!r}-{cursor[1]}"


def decode_cursor(text: str, id_re: re.Pattern[str] = store.JOB_ID_RE) -> tuple[float, str]:
    """Inverse of :func:`encode_cursor` for ids matching ``id_re`` (job ids by default); ValueError otherwise."""
    if not re.fullmatch(cursor_pattern(id_re), text):
        raise ValueError("not a cursor returned by this API")
    ts, _, job_id = text.rpartition("-")
    return float(ts), job_id
