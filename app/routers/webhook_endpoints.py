"""``/v1/webhook-endpoints``: a tenant's standing webhook targets (Stripe's webhook endpoints, Svix's endpoints).

Each endpoint receives the events of every erasure of its tenant that its filter takes, signed with its own secret
(shown once: in the answer that creates it and in the answer of each rotation). Another tenant's endpoint is 404.
The records live in Redis (:mod:`erasepro_jobs.endpoints`); the workers read them at each delivery.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response

from app.deps import Cfg, Svc, Tenant, not_found, require_webhook_target, validation_error
from app.schemas import (
    RotateSecretRequest,
    WebhookEndpointCreate,
    WebhookEndpointList,
    WebhookEndpointUpdate,
    WebhookEndpointView,
    WebhookEndpointWithSecret,
    omittable,
)
from erasepro_jobs.endpoints import ENDPOINT_ID_RE, Endpoint, EndpointLimit
from erasepro_jobs.listing import cursor_pattern, decode_cursor, encode_cursor

router = APIRouter(tags=["webhook endpoints"])

EndpointId = Annotated[str, Path(max_length=64, description="An endpoint id (we_ and 32 hex characters).")]
NOT_FOUND = {404: {"description": "no such endpoint for this tenant"}}


def _with_secret(ep: Endpoint) -> dict[str, Any]:
    return {**ep.view(), "secret": ep.secret}


@router.post("/v1/webhook-endpoints", status_code=201, response_model=WebhookEndpointWithSecret,
             responses={409: {"description": "the tenant has the server's limit of endpoints"}})
async def create_endpoint(body: WebhookEndpointCreate, tenant: Tenant, svc: Svc, settings: Cfg,
                          response: Response) -> dict:
    """Register an endpoint; the answer carries its ``secret``, which is never shown again."""
    await require_webhook_target(body.url, settings, ("body", "url"))
    try:
        ep = await svc.endpoints("create", tenant, url=body.url, events=body.events,
                                     description=body.description, enabled=body.enabled,
                                     limit=settings.webhook_max_endpoints)
    except EndpointLimit as exc:
        raise HTTPException(409, str(exc)) from None
    response.headers["Location"] = f"/v1/webhook-endpoints/{ep.id}"
    return _with_secret(ep)


@router.get("/v1/webhook-endpoints", response_model=WebhookEndpointList)
async def list_endpoints(tenant: Tenant, svc: Svc,
                         limit: Annotated[int, Query(ge=1, le=100)] = 20,
                         cursor: Annotated[omittable(str, pattern=cursor_pattern(ENDPOINT_ID_RE)),
                                           Query(description="The previous page's next_cursor.")] = None) -> dict:
    """The tenant's endpoints, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    try:
        after = decode_cursor(cursor, ENDPOINT_ID_RE) if cursor else None
    except ValueError as exc:
        raise validation_error(("query", "cursor"), str(exc)) from None
    eps = sorted(await svc.endpoints("all", tenant),
                 key=lambda e: (e.created_at, e.id), reverse=True)
    if after is not None:
        eps = [e for e in eps if (e.created_at, e.id) < after]
    page = eps[:limit]
    nxt = encode_cursor((page[-1].created_at, page[-1].id)) if len(eps) > limit else None
    return {"items": [e.view() for e in page], "next_cursor": nxt}


@router.get("/v1/webhook-endpoints/{endpoint_id}", response_model=WebhookEndpointView, responses=NOT_FOUND)
async def get_endpoint(endpoint_id: EndpointId, tenant: Tenant, svc: Svc) -> dict:
    ep = await svc.endpoints("get", tenant, endpoint_id)
    if ep is None:
        raise not_found("endpoint")
    return ep.view()


@router.patch("/v1/webhook-endpoints/{endpoint_id}", response_model=WebhookEndpointView, responses=NOT_FOUND)
async def update_endpoint(endpoint_id: EndpointId, body: WebhookEndpointUpdate, tenant: Tenant, svc: Svc,
                          settings: Cfg) -> dict:
    """Change the fields sent. Disabling an endpoint (or narrowing its filter) also drops what is still queued
    for it when its turn comes."""
    changes = body.model_dump(include=body.model_fields_set)
    if "url" in changes:
        await require_webhook_target(changes["url"], settings, ("body", "url"))
    ep = await svc.endpoints("update", tenant, endpoint_id, changes)
    if ep is None:
        raise not_found("endpoint")
    return ep.view()


@router.delete("/v1/webhook-endpoints/{endpoint_id}", status_code=204, responses=NOT_FOUND)
async def delete_endpoint(endpoint_id: EndpointId, tenant: Tenant, svc: Svc) -> Response:
    """Remove the endpoint; deliveries still queued for it are dropped (recorded as ``dropped``)."""
    if not await svc.endpoints("delete", tenant, endpoint_id):
        raise not_found("endpoint")
    return Response(status_code=204)


@router.post("/v1/webhook-endpoints/{endpoint_id}/rotate-secret", response_model=WebhookEndpointWithSecret,
             responses=NOT_FOUND)
async def rotate_secret(endpoint_id: EndpointId, tenant: Tenant, svc: Svc,
                        body: RotateSecretRequest | None = None) -> dict:
    """A new secret, shown once. The previous one keeps signing (beside the new one) for ``grace_s`` seconds
    (default a day; 0 ends it now)."""
    grace = (body or RotateSecretRequest()).grace_s
    ep = await svc.endpoints("rotate", tenant, endpoint_id, grace)
    if ep is None:
        raise not_found("endpoint")
    return _with_secret(ep)
