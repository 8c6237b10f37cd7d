"""Request dependencies shared by the routers: settings, the service, the caller's tenant, path parameters,
and the error helpers every router answers with."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from app.service import Service
from erasepro_jobs.registry import BaseModelInfo, ModelUnavailable
from erasepro_jobs.settings import Settings
from erasepro_jobs.webhooks import Unresolved, resolve_target

JobId = Annotated[str, Path(max_length=64, description="A job id (32 hex characters; any other id is 404).")]


def service(request: Request) -> Service:
    return request.app.state.service


def settings(request: Request) -> Settings:
    """The settings the application was built with (``create_app(settings)``, else the environment)."""
    return request.app.state.settings


async def tenant_of(request: Request) -> str:
    """The caller's tenant, authenticated by the Door middleware before the body was read (401 there otherwise)."""
    tenant = request.scope.get("state", {}).get("tenant")
    if tenant is None:  # a /v1 route always passes the Door; this guards a route mounted elsewhere
        raise HTTPException(401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                            headers={"WWW-Authenticate": "Bearer"})
    return tenant


Tenant = Annotated[str, Depends(tenant_of)]
Svc = Annotated[Service, Depends(service)]
Cfg = Annotated[Settings, Depends(settings)]


def not_found(what: str = "erasure") -> HTTPException:
    return HTTPException(404, f"{what} not found")


def validation_error(loc: tuple[str, ...], msg: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 in FastAPI's own shape, for checks that need more than the request model (the registry, limits)."""
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg}])


async def require_webhook_target(url: str, settings: Settings, loc: tuple[str, ...]) -> None:
    """The door for every webhook URL (a job's ``webhook``, an endpoint's ``url``): 422 naming ``loc`` when
    :func:`resolve_target` refuses it (it resolves the host, so it runs in a thread). A host that does not
    resolve (yet) is accepted: every delivery resolves it again and retries an unresolved one, as it would a
    name that stopped resolving, so DNS at registration time proves nothing either way."""
    found = await run_in_threadpool(resolve_target, url, settings.webhook_allow_private,
                                    settings.webhook_port_set)
    if isinstance(found, str) and not isinstance(found, Unresolved):
        raise validation_error(loc, found)


def require_model(svc: Service, name: str, loc: tuple[str, ...]) -> BaseModelInfo:
    """The registered, installed model (decided by :meth:`Registry.require`). Otherwise: a name the request
    gives that is not registered is 422 naming ``loc`` in a body, 404 in the path (a missing resource); a
    registered model that is not installed, or an erasure's model that is gone, is 409 (the server's state)."""
    try:
        return svc.registry.require(name)
    except ModelUnavailable as exc:
        if not exc.registered and loc[0] == "body":
            raise validation_error(loc, str(exc)) from None
        if not exc.registered and loc == ("path", "name"):
            raise HTTPException(404, str(exc)) from None
        raise HTTPException(409, str(exc)) from None
