"""``GET /v1/erasures/{id}/events``: the erasure's event log, as JSON pages or a Server-Sent Events stream.

SSE: each event is ``id: <event id>`` / ``event: <type>`` / ``data: <the JSON item>``; a reconnecting client
sends ``Last-Event-ID`` and receives only what came after it. The stream ends after a terminal event
(``erasure.succeeded|failed|cancelled``), when the job is terminal and nothing is left to send, or after
``MAX_STREAM_S`` (the client reconnects); a comment line every ``KEEPALIVE_S`` keeps proxies from closing it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from app.deps import JobId, Svc, Tenant, not_found
from app.schemas import DeliveryList, EventList, omittable
from app.service import Service
from erasepro_jobs import store
from erasepro_jobs.events import TERMINAL_EVENTS

router = APIRouter(tags=["erasures"])

MAX_STREAM_S = 600.0
KEEPALIVE_S = 15.0
BLOCK_MS = 1000
# a Redis stream id, ``<ms>[-<seq>]`` (two 64-bit numbers; 19 digits always fit; a missing seq is 0)
EVENT_ID_RE = r"^[0-9]{1,19}(?:-[0-9]{1,19})?$"

After = Annotated[omittable(str, pattern=EVENT_ID_RE),
                  Query(description="Return events after this event id (the previous page's "
                                                "next_cursor).")]


def _item(ev: dict[str, Any]) -> dict[str, Any]:
    return {"id": ev["id"], "type": ev["type"], "created_at": store.iso(ev.get("created_at")),
            "data": ev.get("data") or {}}


@router.get("/v1/erasures/{job_id}/events", response_model=EventList,
            responses={200: {"content": {"text/event-stream": {}}},
                       404: {"description": "no such erasure for this tenant"}})
async def erasure_events(job_id: JobId, tenant: Tenant, svc: Svc, after: After = None,
                         limit: Annotated[int, Query(ge=1, le=500)] = 100,
                         accept: Annotated[str, Header()] = "",
                         last_event_id: Annotated[omittable(str, pattern=EVENT_ID_RE), Header()] = None,
                         ) -> Any:
    """Oldest first. With ``Accept: text/event-stream``: a live stream that resumes after ``Last-Event-ID``."""
    if await svc.erasure(tenant, job_id) is None:
        raise not_found()
    if "text/event-stream" in accept:
        return StreamingResponse(_stream(svc, tenant, job_id, last_event_id or after),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    events = await svc.events(tenant, job_id, after, limit)
    return {"items": [_item(e) for e in events],
            "next_cursor": events[-1]["id"] if len(events) == limit else None}


async def _stream(svc: Service, tenant: str, job_id: str, after: str | None) -> AsyncIterator[bytes]:
    deadline = time.monotonic() + MAX_STREAM_S
    last_sent = time.monotonic()
    yield b"retry: 1000\n\n"
    while time.monotonic() < deadline:
        events = await svc.events(tenant, job_id, after, 500)
        for ev in events:
            after = ev["id"]
            yield f"id: {ev['id']}\nevent: {ev['type']}\ndata: {json.dumps(_item(ev))}\n\n".encode()
            last_sent = time.monotonic()
            if ev["type"] in TERMINAL_EVENTS:
                return
        if events:
            continue
        view = await svc.erasure(tenant, job_id)
        if view is None or view["status"] in store.TERMINAL:
            # terminal without a terminal event left to send (e.g. the log was lost with Redis): nothing more
            if not await svc.events(tenant, job_id, after, 1):
                return
            continue
        # wait for the next entry of the stream (returns at once if one arrived since ``after``)
        await svc.wait_event(job_id, after, BLOCK_MS)
        if time.monotonic() - last_sent >= KEEPALIVE_S:
            yield b": keep-alive\n\n"
            last_sent = time.monotonic()



@router.get("/v1/erasures/{job_id}/deliveries", response_model=DeliveryList,
            responses={404: {"description": "no such erasure for this tenant"}})
async def erasure_deliveries(job_id: JobId, tenant: Tenant, svc: Svc) -> dict:
    """Every attempt to deliver this erasure's events to its webhook, oldest first (the last 500)."""
    if await svc.erasure(tenant, job_id) is None:
        raise not_found()
    items = await svc.deliveries(job_id)
    return {"items": [{**d, "at": store.iso(d.get("at"))} for d in items]}
