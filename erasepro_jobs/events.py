"""The event log: one table of event types, and each subject's log (a Redis stream plus a durable copy in the
artifact store).

An event belongs to a *subject*, an erasure: its own transitions and those of the generations, exports and
evaluations made from it go to ``events:{erasure id}`` and, one object per event, to the artifact store
(:mod:`erasepro_jobs.storage`: the data dir, or S3) under ``tenants/{t}/events/{erasure id}/{ms}-{seq}.json``
(zero-padded, so keys sort as ids do). The copy survives an API restart and a Redis flush, and every machine
reads the same one. Event ids are Redis stream ids (``<ms>-<seq>``), increasing per subject: they are the
pagination cursor and the SSE ``Last-Event-ID``. Object stores have no append, hence an object per event; a
read lists the subject's objects and fetches only those its page needs that the stream no longer holds.

Logs written before this layout (``tenants/{t}/events/{erasure id}.jsonl``, one line per event, in the data dir)
are still read where the store is that folder, and removed with the subject.

:data:`EVENT_TYPES` is the one list of event types: the REST schemas (``webhook_events``, endpoint filters), the
transitions' event names and the terminal set are derived from it.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import redis

from erasepro_jobs import store
from erasepro_jobs.settings import REDIS_PREFIX
from erasepro_jobs.storage import ObjectNotFound, Storage, StorageError

log = logging.getLogger("erasepro.events")

# event type -> (job kind, transition) it records; a transition not listed logs no event.
EVENT_TYPES: dict[str, tuple[str, str]] = {
    "erasure.created": ("erasure", "created"),
    "erasure.started": ("erasure", "started"),
    "erasure.progress": ("erasure", "progress"),
    "erasure.succeeded": ("erasure", "succeeded"),
    "erasure.failed": ("erasure", "failed"),
    "erasure.cancelled": ("erasure", "cancelled"),
    "erasure.requeued": ("erasure", "requeued"),  # its worker died: queued again for another attempt (retry.py)
    "generation.succeeded": ("generation", "succeeded"),
    "generation.failed": ("generation", "failed"),
    "generation.cancelled": ("generation", "cancelled"),
    "checkpoint.exported": ("export", "succeeded"),
    "checkpoint.export_failed": ("export", "failed"),
    "evaluation.created": ("evaluation", "created"),
    "evaluation.succeeded": ("evaluation", "succeeded"),
    "evaluation.failed": ("evaluation", "failed"),
    "evaluation.cancelled": ("evaluation", "cancelled"),
}
_TYPE_OF = {transition: typ for typ, transition in EVENT_TYPES.items()}
# The events after which an erasure's log gets no more of its own transitions (SSE streams end there).
TERMINAL_EVENTS: tuple[str, ...] = tuple(t for t, (kind, what) in EVENT_TYPES.items()
                                         if kind == "erasure" and what in store.TERMINAL)
MAX_EVENTS = 2000  # per subject stream (approximate trim); the durable copy keeps everything
_OBJECT_RE = re.compile(r"^([0-9]{13})-([0-9]{6,})\.json$")


def event_type(kind: str, what: str) -> str:
    """``erasure.started`` etc. (see :data:`EVENT_TYPES`); '' for a transition that logs no event."""
    return _TYPE_OF.get((kind, what), "")


def k_events(subject: str) -> str:
    return f"{REDIS_PREFIX}events:{subject}"


def events_prefix(tenant: str, subject: str) -> str:
    """The artifact-store prefix of a subject's durable log (one object per event)."""
    if not store.JOB_ID_RE.match(subject):
        raise ValueError(f"not a job id: {subject!r}")
    return f"tenants/{tenant}/events/{subject}"


def event_key(tenant: str, subject: str, event_id: str) -> str:
    """``tenants/{t}/events/{subject}/{ms:013d}-{seq:06d}.json``: keys sort as the ids do."""
    ms, seq = stream_id_key(event_id)
    return f"{events_prefix(tenant, subject)}/{ms:013d}-{seq:06d}.json"


def legacy_key(tenant: str, subject: str) -> str:
    """Where a log written before one object per event lives (one JSON line per event)."""
    return f"{events_prefix(tenant, subject)}.jsonl"


def stream_id_key(event_id: str) -> tuple[int, int]:
    """``'<ms>-<seq>'`` -> ``(ms, seq)``; ValueError on anything else."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


class EventLog:
    """Reads the merged log and keeps the durable copy in the artifact store; the transitions' scripts append to
    the stream."""

    def __init__(self, r: redis.Redis, storage: Storage) -> None:
        self.r = r
        self.storage = storage

    def persist(self, tenant: str, subject: str, event: dict[str, Any]) -> None:
        """Put the event as its own object (ids are unique per subject: concurrent writers never collide)."""
        try:
            self.storage.put_bytes(event_key(tenant, subject, event["id"]), dumps(event).encode())
        except (StorageError, OSError, ValueError) as exc:  # Redis holds the event; the copy is best effort
            log.warning("could not persist event %s of %s: %s", event["id"], subject, exc)

    def read(self, tenant: str, subject: str, after: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The subject's events, oldest first, strictly after ``after``: the stream and the durable copy merged
        (an event in both is read from the stream; the store is asked only for the page's others)."""
        found: dict[str, dict[str, Any]] = {}
        for eid, fields in self.r.xrange(k_events(subject), "-", "+"):
            found[eid] = {"id": eid, "type": fields.get("type", ""), "created_at": float(fields.get("at") or 0.0),
                          "data": json.loads(fields.get("data") or "{}")}
        stored: dict[str, str] = {}  # event id -> its object's key
        for obj in self.storage.list(events_prefix(tenant, subject)):
            m = _OBJECT_RE.match(obj.key.rsplit("/", 1)[-1])
            if m:
                stored[f"{int(m[1])}-{int(m[2])}"] = obj.key
        for ev in self._legacy(tenant, subject):
            found.setdefault(ev["id"], ev)
        ids = sorted(found.keys() | stored.keys(), key=stream_id_key)
        if after:
            cut = stream_id_key(after)
            ids = [i for i in ids if stream_id_key(i) > cut]
        out = []
        for eid in ids:
            if len(out) == limit:
                break
            ev = found.get(eid) or self._stored(stored[eid])
            if ev is not None:
                out.append(ev)
        return out

    def _stored(self, key: str) -> dict[str, Any] | None:
        try:
            ev = json.loads(self.storage.get_bytes(key, limit=1 << 20))
        except (ObjectNotFound, StorageError, ValueError):  # deleted meanwhile, or unreadable: skip it
            return None
        return ev if isinstance(ev, dict) and "id" in ev else None

    def _legacy(self, tenant: str, subject: str) -> list[dict[str, Any]]:
        """The events of a log written as JSON lines before one object per event (none: []). Such logs were only
        ever written to the local data dir, so only a store on the local file system can hold one (an object
        store is not asked: no request per read for a file that cannot be there)."""
        path = self.storage.local_path(legacy_key(tenant, subject))
        if path is None:
            return []
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for line in text.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash mid-write
            if isinstance(ev, dict) and "id" in ev:
                out.append(ev)
        return out

    def forget(self, tenant: str, subject: str) -> None:
        """Drop a subject's log: the stream and the durable copy."""
        self.r.delete(k_events(subject))
        try:
            self.storage.delete_prefix(events_prefix(tenant, subject))
            self.storage.delete(legacy_key(tenant, subject))
        except (StorageError, OSError) as exc:
            log.warning("could not remove the event log of %s: %s", subject, exc)
