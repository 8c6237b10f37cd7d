"""The audit log's store (erasepro_jobs.audit) on the file system: append-only segments, newest-first reads
across days and writers, filters, the scan budget and the cursor."""

from __future__ import annotations

from pathlib import Path

import pytest

from erasepro_jobs import audit
from erasepro_jobs.audit import AuditLog, Filters
from erasepro_jobs.storage import FileStorage

DAY = 86400 * 10**9
MS = 10**6  # offsets well above a float timestamp's resolution (~240 ns today)


def _write(log: AuditLog, ns_list: list[int], **fields: object) -> None:
    for ns in ns_list:
        e = log.record(action="erasure.create", result=202, request_id=f"r{ns}", **fields)
        e["id"] = audit.new_id(ns)  # place it in time
    log.flush()


def test_segments_are_new_objects_and_reads_merge_writers(tmp_path: Path) -> None:
    store = FileStorage(tmp_path)
    a, b = AuditLog(store, "a"), AuditLog(store, "b")
    now = 1_700_000_000 * 10**9
    _write(a, [now - 3 * DAY, now - DAY - 5 * MS, now - 10 * MS], tenant="acme")
    _write(b, [now - DAY, now - 20 * MS, now - 5 * MS], tenant="globex")
    _write(a, [now - 2 * MS], tenant="acme")
    keys = [o.key for o in store.list("audit")]
    assert len(keys) == 6 and all(k.endswith(".jsonl") for k in keys)  # one segment per writer, flush and day
    every, nxt = a.read(Filters(until=(now + 1) / 1e9), limit=100)
    assert nxt is None
    assert [int(e["id"][:19]) for e in every] == sorted([now - 3 * DAY, now - DAY - 5 * MS, now - 10 * MS, now - DAY,
                                                         now - 20 * MS, now - 5 * MS, now - 2 * MS], reverse=True)
    acme, _ = a.read(Filters(tenant="acme", until=(now + 1) / 1e9))
    assert {e["tenant"] for e in acme} == {"acme"} and len(acme) == 4
    # pages of 2 walk the same lines in the same order
    walked, cursor = [], None
    while True:
        items, cursor = a.read(Filters(until=(now + 1) / 1e9), cursor=cursor, limit=2)
        walked += items
        if cursor is None:
            break
    assert [e["id"] for e in walked] == [e["id"] for e in every]
    # since bounds the window
    recent, _ = a.read(Filters(since=(now - 100 * MS) / 1e9, until=(now + 1) / 1e9))
    assert len(recent) == 4


def test_the_scan_budget_returns_a_cursor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStorage(tmp_path)
    log = AuditLog(store, "w")
    now = 1_700_000_000 * 10**9
    for i in range(6):
        _write(log, [now - 100 * MS * i], tenant="acme")
    monkeypatch.setattr(audit, "SCAN_BUDGET", 2)
    seen, cursor, calls = [], None, 0
    while True:
        items, cursor = log.read(Filters(tenant="nobody", until=(now + 1) / 1e9), cursor=cursor)
        calls += 1
        seen += items
        if cursor is None:
            break
    assert seen == [] and calls >= 3
    items, cursor = log.read(Filters(until=(now + 1) / 1e9), limit=10)
    assert len(items) == 2 and cursor is not None  # a short page: follow the cursor


def test_only_known_fields_are_kept(tmp_path: Path) -> None:
    log = AuditLog(FileStorage(tmp_path), "w")
    e = log.record(action="x", result=200, request_id="r", authorization="Bearer secret", body="{...}")
    assert "authorization" not in e and "body" not in e
    log.flush()
    assert b"secret" not in b"".join(p.read_bytes() for p in tmp_path.rglob("*.jsonl"))


def test_a_window_of_years_is_walked_a_few_weeks_per_request(tmp_path: Path) -> None:
    log = AuditLog(FileStorage(tmp_path), "w")
    now = 1_700_000_000 * 10**9
    _write(log, [now - 400 * DAY], tenant="acme")
    seen, cursor, calls = [], None, 0
    while True:
        items, cursor = log.read(Filters(since=(now - 3650 * DAY) / 1e9, until=now / 1e9), cursor=cursor)
        calls += 1
        seen += items
        if cursor is None:
            break
    assert len(seen) == 1 and 80 < calls < 110  # ten years, 40 days per request
