"""The event log: one table of event types, and each subject's log (a Redis stream plus a durable copy on disk).

An event belongs to a *subject*, an erasure: its own transitions and those of the generations, exports and
evaluations made from it go to ``events:{erasure id}`` and to ``tenants/{t}/events/{erasure id}.jsonl`` (the
copy survives an API restart and a Redis flush). Event ids are Redis stream ids (``<ms>-<seq>``), increasing per
subject: they are the pagination cursor and the SSE ``Last-Event-ID``.

:data:`EVENT_TYPES` is the one list of event types: the REST schemas (``webhook_events``, endpoint filters), the
transitions' event names and the terminal set are derived from it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import redis

from erasepro_jobs import store
from erasepro_jobs.settings import REDIS_PREFIX

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
MAX_EVENTS = 2000  # per subject stream (approximate trim); the disk copy keeps everything


def event_type(kind: str, what: str) -> str:
    """``erasure.started`` etc. (see :data:`EVENT_TYPES`); '' for a transition that logs no event."""
    return _TYPE_OF.get((kind, what), "")


def k_events(subject: str) -> str:
    return f"{REDIS_PREFIX}events:{subject}"


def events_path(data_dir: Path, tenant: str, subject: str) -> Path:
    if not store.JOB_ID_RE.match(subject):
        raise ValueError(f"not a job id: {subject!r}")
    return store.tenant_dir(data_dir, tenant) / "events" / f"{subject}.jsonl"


def stream_id_key(event_id: str) -> tuple[int, int]:
    """``'<ms>-<seq>'`` -> ``(ms, seq)``; ValueError on anything else."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


class EventLog:
    """Reads the merged log and keeps the durable copy; the transitions' scripts append to the stream."""

    def __init__(self, r: redis.Redis, data_dir: Path) -> None:
        self.r = r
        self.data_dir = Path(data_dir)

    def persist(self, tenant: str, subject: str, event: dict[str, Any]) -> None:
        """Append to the durable copy (one ``write`` of one line, O_APPEND: concurrent writers do not interleave)."""
        try:
            path = events_path(self.data_dir, tenant, subject)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, (dumps(event) + "\n").encode())
            finally:
                os.close(fd)
        except (OSError, ValueError) as exc:  # Redis holds the event; the copy is best effort
            log.warning("could not persist event %s of %s: %s", event["id"], subject, exc)

    def read(self, tenant: str, subject: str, after: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The subject's events, oldest first, strictly after ``after``: the stream and the disk copy merged."""
        found: dict[str, dict[str, Any]] = {}
        try:
            with open(events_path(self.data_dir, tenant, subject), encoding="utf-8") as f:
                for line in f:
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a crash mid-write
                    if isinstance(ev, dict) and "id" in ev:
                        found[ev["id"]] = ev
        except FileNotFoundError:
            pass
        for eid, fields in self.r.xrange(k_events(subject), "-", "+"):
            found.setdefault(eid, {"id": eid, "type": fields.get("type", ""),
                                   "created_at": float(fields.get("at") or 0.0),
                                   "data": json.loads(fields.get("data") or "{}")})
        ordered = sorted(found.values(), key=lambda e: stream_id_key(e["id"]))
        if after:
            cut = stream_id_key(after)
            ordered = [e for e in ordered if stream_id_key(e["id"]) > cut]
        return ordered[:limit]

    def forget(self, tenant: str, subject: str) -> None:
        """Drop a subject's log: the stream and the disk copy."""
        self.r.delete(k_events(subject))
        try:
            events_path(self.data_dir, tenant, subject).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove the event log of %s: %s", subject, exc)
