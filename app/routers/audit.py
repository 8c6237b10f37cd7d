"""``GET /v1/audit``: the audit log (:mod:`erasepro_jobs.audit`), for admin keys (``ERASEPRO_ADMIN_KEYS``) only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic.json_schema import SkipJsonSchema
from starlette.concurrency import run_in_threadpool

from app.deps import validation_error
from app.schemas import AuditList, omittable
from erasepro_jobs.audit import ID_RE, Filters

router = APIRouter(tags=["audit"])

Short = Annotated[omittable(str, max_length=200), Query()]


def _admin(request: Request) -> str:
    admin = request.scope.get("state", {}).get("admin")
    if admin is None:  # a tenant's key is valid (the Door let it in) but may not read anyone's trail
        raise HTTPException(403, "the audit log needs an admin key (ERASEPRO_ADMIN_KEYS)")
    return admin


@router.get("/v1/audit", response_model=AuditList,
            responses={403: {"description": "not an admin key"}, 404: {"description": "the audit log is off"}})
async def read_audit(
    request: Request,
    tenant: Short = None, key_id: Short = None, action: Short = None, resource: Short = None,
    request_id: Short = None,
    result: Annotated[omittable(int, ge=100, le=599), Query(description="Only this HTTP status.")] = None,
    since: Annotated[datetime | SkipJsonSchema[None], Query(
        description="From this time (inclusive; default: 31 days before `until`).")] = None,
    until: Annotated[datetime | SkipJsonSchema[None], Query(description="Before this time (default: now).")] = None,
    cursor: Annotated[omittable(str, pattern=ID_RE.pattern),
                      Query(description="The previous page's next_cursor.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict:
    """State-changing and download requests of every tenant, newest first, filtered by exact matches. Each
    request examines a bounded number of log segments: a page may come back short (even empty) with a
    ``next_cursor``; follow it until it is ``null``."""
    _admin(request)
    audit = getattr(request.app.state, "audit", None)
    if audit is None:
        raise HTTPException(404, "the audit log is off on this server (ERASEPRO_AUDIT=0)")
    if cursor is not None and not ID_RE.match(cursor):
        raise validation_error(("query", "cursor"), "not a cursor returned by this API")
    filters = Filters(tenant=tenant, key_id=key_id, action=action, resource=resource, result=result,
                      request_id=request_id, since=since.timestamp() if since else None,
                      until=until.timestamp() if until else None)
    items, nxt = await run_in_threadpool(audit.read, filters, cursor, limit)
    return {"items": items, "next_cursor": nxt}
