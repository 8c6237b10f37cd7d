"""Request dependencies shared by the routers: the service, the caller's tenant, common path parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request

from app.service import Service

JobId = Annotated[str, Path(max_length=64, description="A job id (32 hex characters).")]


def service(request: Request) -> Service:
    return request.app.state.service


async def tenant_of(request: Request) -> str:
    """The caller's tenant, authenticated by the Door middleware before the body was read (401 there otherwise)."""
    tenant = request.scope.get("state", {}).get("tenant")
    if tenant is None:  # a /v1 route always passes the Door; this guards a route mounted elsewhere
        raise HTTPException(401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                            headers={"WWW-Authenticate": "Bearer"})
    return tenant


Tenant = Annotated[str, Depends(tenant_of)]
Svc = Annotated[Service, Depends(service)]


def not_found(what: str = "erasure") -> HTTPException:
    return HTTPException(404, f"{what} not found")
