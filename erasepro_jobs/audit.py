"""The audit log: who created, changed, deleted or downloaded what, append-only, beside the artifacts.

One JSON line per request (tenant, key id, action, resource, result, request id, time; never a key, a secret,
a body or a query string). Lines are stored through the artifact store (:mod:`erasepro_jobs.storage`), so the
log lives where checkpoints do - the data dir, or S3 - and outlives Redis. Object stores have no append, so the
log is a series of immutable *segments*: each API process buffers its lines and puts them as one new object at
most every ``ERASEPRO_AUDIT_FLUSH_S`` (1 s) and at shutdown; nothing ever rewrites or deletes a segment.

Keys: ``audit/{YYYY-MM-DD}/{first ns}-{last ns}-{writer}.jsonl`` (the UTC day of every line in it: a flush
that spans midnight writes two segments; ns since the
epoch, 19 digits, so names sort by time). A line's ``id`` is ``{ns:019d}-{8 hex}``: ids sort by time and are
the pagination cursor.

Reading (:meth:`AuditLog.read`) walks segments newest first, day by day from ``until`` back to ``since`` (31
days before ``until`` unless given), and examines at most ``SCAN_BUDGET`` segments and ``DAY_BUDGET`` days per
call: a filter that matches little may return a short page with a cursor; follow it until it is ``None``.

Trade-off: a process killed with SIGKILL loses the lines of its last flush interval (at most 1 s by default);
lines of other processes appear once they flush.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from erasepro_jobs.storage import ObjectNotFound, Storage, StorageError

log = logging.getLogger("erasepro.audit")

PREFIX = "audit"
SCAN_BUDGET = 200  # segments one read examines at most
DAY_BUDGET = 40  # days one read lists at most: the default window (32 days) in one request, years a page at a time
MAX_BUFFER = 100_000  # lines a process keeps while the store is down; beyond, the oldest are dropped (and logged)
DEFAULT_WINDOW_DAYS = 31
ID_RE = re.compile(r"^[0-9]{19}-[0-9a-f]{8}$")
_SEGMENT_RE = re.compile(r"^([0-9]{19})-([0-9]{19})-[A-Za-z0-9_-]+\.jsonl$")
FIELDS = ("id", "at", "tenant", "key_id", "action", "resource", "result", "request_id", "method", "route",
          "address")


def new_id(ns: int | None = None) -> str:
    return f"{ns if ns is not None else time.time_ns():019d}-{secrets.token_hex(4)}"


def id_ns(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def _day(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Filters:
    """Exact-match filters (``None``: any); ``since``/``until``: Unix seconds, inclusive / exclusive."""

    tenant: str | None = None
    key_id: str | None = None
    action: str | None = None
    resource: str | None = None
    result: int | None = None
    request_id: str | None = None
    since: float | None = None
    until: float | None = None

    def match(self, e: dict[str, Any]) -> bool:
        for name in ("tenant", "key_id", "action", "resource", "result", "request_id"):
            want = getattr(self, name)
            if want is not None and e.get(name) != want:
                return False
        return True


class AuditLog:
    """One process's writer (a buffer flushed as segments) and every process's reader."""

    def __init__(self, storage: Storage, writer: str | None = None) -> None:
        self.storage = storage
        self.writer = re.sub(r"[^A-Za-z0-9_-]", "_", writer or secrets.token_hex(6))[:40]
        self._buf: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one put at a time: segments of one writer never overlap

    # ------------------------------------------------------------------------------------------ write
    def record(self, **fields: Any) -> dict[str, Any]:
        """Buffer one line (fields outside :data:`FIELDS` are dropped: nothing else can leak in)."""
        ns = time.time_ns()
        entry = {"id": new_id(ns), "at": datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")}
        entry.update({k: v for k, v in fields.items() if k in FIELDS and k not in ("id", "at")})
        with self._lock:
            self._buf.append(entry)
            if len(self._buf) > MAX_BUFFER:
                dropped = len(self._buf) - MAX_BUFFER
                del self._buf[:dropped]
                log.error("audit: the store has refused writes for a while; dropped %d oldest lines", dropped)
        return entry

    def pending(self) -> int:
        with self._lock:
            return len(self._buf)

    def flush(self) -> int:
        """Put the buffered lines as one segment per UTC day they fall on; returns how many were stored. What
        the store refuses stays buffered for the next flush."""
        with self._flush_lock:
            with self._lock:
                batch, self._buf = self._buf, []
            days: dict[str, list[dict[str, Any]]] = {}
            for e in sorted(batch, key=lambda e: e["id"]):
                days.setdefault(_day(id_ns(e["id"])), []).append(e)
            stored = 0
            for day, lines in days.items():
                first, last = id_ns(lines[0]["id"]), id_ns(lines[-1]["id"])
                key = f"{PREFIX}/{day}/{first:019d}-{last:019d}-{self.writer}.jsonl"
                body = "".join(json.dumps(e, separators=(",", ":"), sort_keys=True) + "\n" for e in lines)
                try:
                    self.storage.put_bytes(key, body.encode())
                except (StorageError, OSError) as exc:
                    log.warning("audit: could not store %d lines (%s); keeping them for the next flush",
                                len(lines), exc)
                    with self._lock:
                        self._buf[:0] = lines
                    continue
                stored += len(lines)
            return stored

    # ------------------------------------------------------------------------------------------- read
    def _segments(self, day: str) -> list[tuple[int, int, str]]:
        out = []
        for obj in self.storage.list(f"{PREFIX}/{day}"):
            m = _SEGMENT_RE.match(obj.key.rsplit("/", 1)[-1])
            if m:
                out.append((int(m.group(1)), int(m.group(2)), obj.key))
        return out

    def read(self, filters: Filters = Filters(), cursor: str | None = None,
             limit: int = 100) -> tuple[list[dict[str, Any]], str | None]:
        """Lines matching ``filters``, newest first, strictly older than ``cursor`` (an id or a previous
        ``next_cursor``); returns ``(items, next_cursor)``, ``next_cursor`` None at the end of the window."""
        self.flush()  # this process's own lines are readable at once
        now = time.time_ns() + 1
        top = now if filters.until is None else min(int(filters.until * 1e9), now)  # lines with ns < top
        bound_id = f"{top:019d}-00000000"
        if cursor is not None and cursor < bound_id:
            bound_id, top = cursor, id_ns(cursor) + 1
        floor = (int(filters.since * 1e9) if filters.since is not None
                 else top - DEFAULT_WINDOW_DAYS * 86400 * 10**9)
        found: list[dict[str, Any]] = []
        known: list[tuple[int, int, str]] = []
        budget, days = SCAN_BUDGET, DAY_BUDGET
        day = datetime.fromtimestamp(top / 1e9, UTC).date()
        end_day = datetime.fromtimestamp(floor / 1e9, UTC).date()
        while True:
            # a segment holds the lines of one day: once days top..day are listed, every line at or after the
            # start of `day` is in a known segment
            known += [s for s in self._segments(day.isoformat()) if s[0] < top and s[1] >= floor]
            known.sort(key=lambda s: s[1], reverse=True)
            day_start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1e9)
            complete_from = max(day_start, floor)
            while known:
                if budget == 0:  # lines newer than the newest unread segment's last line are all found
                    complete_from = known[0][1] + 1
                    break
                budget -= 1
                _, _, key = known.pop(0)
                found.extend(e for e in self._lines(key) if e["id"] < bound_id and floor <= id_ns(e["id"])
                             and filters.match(e))
            at_end = day <= end_day and not known
            done = [e for e in found if id_ns(e["id"]) >= complete_from]
            days -= 1
            if at_end or budget == 0 or days == 0 or len(done) > limit:
                break
            day -= timedelta(days=1)
        done.sort(key=lambda e: e["id"], reverse=True)
        if len(done) > limit:
            return done[:limit], done[limit - 1]["id"]
        return done, None if at_end else f"{complete_from:019d}-00000000"

    def _lines(self, key: str) -> Iterable[dict[str, Any]]:
        try:
            raw = self.storage.get_bytes(key)
        except ObjectNotFound:
            return []
        out = []
        for line in raw.decode("utf-8", "replace").splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if isinstance(e, dict) and isinstance(e.get("id"), str) and ID_RE.match(e["id"]):
                out.append(e)
        return out
