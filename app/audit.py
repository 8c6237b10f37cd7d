"""The API process's audit writer: created at startup, flushed on a timer and at shutdown (see
:mod:`erasepro_jobs.audit` for the log itself and :mod:`app.observe` for what is recorded)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from erasepro_jobs.audit import AuditLog
from erasepro_jobs.settings import Settings
from erasepro_jobs.storage import Storage

log = logging.getLogger("erasepro.audit")


def start_audit(app: FastAPI, settings: Settings, storage: Storage) -> asyncio.Task | None:
    """``app.state.audit`` (None when ``ERASEPRO_AUDIT=0``) and the task that flushes it."""
    if not settings.audit:
        app.state.audit = None
        return None
    audit = AuditLog(storage, writer=f"api-{socket.gethostname()}-{os.getpid()}")
    app.state.audit = audit

    async def flush_forever() -> None:
        while True:
            await asyncio.sleep(settings.audit_flush_s)
            if audit.pending():
                try:
                    await run_in_threadpool(audit.flush)
                except Exception:  # keep flushing on the next tick whatever went wrong
                    log.exception("audit flush")

    return asyncio.create_task(flush_forever(), name="erasepro-audit-flush")


async def stop_audit(app: FastAPI, task: asyncio.Task | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    audit = getattr(app.state, "audit", None)
    if audit is not None:
        await run_in_threadpool(audit.flush)
