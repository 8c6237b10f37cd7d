"""The ASGI application: ``uvicorn app.main:app`` (or ``erasepro serve``).

Routes (all under ``/v1`` need ``Authorization: Bearer <key>``)::

    POST   /v1/erasures                          submit (202; Idempotency-Key honoured)
    GET    /v1/erasures                          the caller's jobs, newest first, paginated
    GET    /v1/erasures/{id}                     status, progress, report, error, links
    DELETE /v1/erasures/{id}                     cancel a queued/running job, or delete a finished one
    GET    /v1/erasures/{id}/events              the job's event log (JSON pages, or SSE)
    GET    /v1/erasures/{id}/deliveries          every webhook delivery attempt, with its target
    GET    /v1/erasures/{id}/checkpoint          ?format=delta|diffusers (Content-Length, ETag, Range)
    GET/POST /v1/erasures/{id}/evaluations      list the erasure's evaluations, or start one (attacks or a judge; 202)
    GET/DELETE /v1/erasures/{id}/evaluations/{eval_id}   one evaluation, or cancel it
    GET    /v1/erasures/{id}/evaluations/{eval_id}/images/{name}   a judged before/after image (PNG)
    POST   /v1/erasures/{id}/generate            images from the edited model (PNG, JSON, or 202 + job)
    POST   /v1/base-models/{name}/generate       the same from the unedited model
    GET    /v1/generations/{id}[/images]         poll a generation that answered 202
    DELETE /v1/generations/{id}                  cancel a queued/running one, or delete it and its images
    GET    /v1/base-models                       the registry
    GET    /v1/presets                           moderation presets (POST /v1/erasures {"preset": …})
    POST   /v1/webhook-endpoints                 register a tenant endpoint (201; its secret, shown once)
    GET    /v1/webhook-endpoints                 the tenant's endpoints, paginated (no secrets)
    GET/PATCH/DELETE /v1/webhook-endpoints/{id}  read, change, delete an endpoint
    POST   /v1/webhook-endpoints/{id}/rotate-secret   a new secret (the old one signs too for grace_s)
    GET    /v1/usage                             the caller's stored bytes by kind, active jobs, limits
    GET    /v1/audit                             the audit log (admin keys only), filtered, paginated
    GET    /metrics                              Prometheus (a Bearer of ERASEPRO_METRICS_TOKEN or an admin key)
    GET    /healthz  /readyz  /docs  /openapi.json

(tests/test_route_table.py checks this table against the application's routes.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from app.audit import start_audit, stop_audit
from app.console import router as console_router
from app.docs import install_docs
from app.door import Door
from app.headers import SecurityHeaders
from app.metrics import router as metrics_router
from app.observe import Observe
from app.routers import ROUTERS
from app.service import Service, TooManyJobs
from erasepro_jobs import logs
from erasepro_jobs.listing import IndexRebuilding
from erasepro_jobs.registry import RegistryError
from erasepro_jobs.settings import Settings
from erasepro_jobs.storage import ObjectNotFound, StorageError
from erasepro_jobs.usage import QuotaExceeded

log = logging.getLogger("erasepro.api")

RETRY_AFTER_LIMIT_S = 10


# ------------------------------------------------------------------------------------------------- app
def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API. ``settings`` default to the environment; Redis is connected at startup."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        os.umask(0o077)  # what this process writes (records, keys, checkpoints) is the operator's alone
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            settings.data_dir.chmod(0o700)
        except OSError as exc:  # someone else's folder (a mount): leave it, say so
            log.warning("could not make %s private (0700): %s", settings.data_dir, exc)
        if settings.log_format == "json":  # under `uvicorn app.main:app`, nobody else configures logging
            logs.configure(logging.getLogger().level or logging.INFO, "json")
        svc = Service.create(settings)
        app.state.service = svc
        flusher = start_audit(app, settings, svc.storage)
        try:
            yield
        finally:
            await stop_audit(app, flusher)
            await svc.close()

    app = FastAPI(
        title="ErasePro",
        version="0.1.0",
        summary="Closed-form concept erasure for text-to-image diffusion models, as a service.",
        lifespan=lifespan,
        redirect_slashes=False,  # a slash redirect's Location echoed the request's Host
        docs_url=None,  # app.docs serves /docs from local files; ReDoc would load from a CDN: not served
        redoc_url=None,
    )
    if settings.docs:
        install_docs(app)
    app.add_middleware(Door, max_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s,
                       settings=settings)
    hosts = [h.strip() for h in settings.trusted_hosts.split(",") if h.strip()] or ["*"]
    if hosts != ["*"]:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)
    app.add_middleware(SecurityHeaders)  # every answer carries them, the door's and the 400s too
    app.add_middleware(Observe)  # outermost: request id, HTTP metrics, audit line and access log of every answer
    app.state.settings = settings  # the Cfg dependency of the routers
    _install_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(metrics_router)  # GET /metrics (Prometheus; a metrics token or admin key)
    app.include_router(console_router)  # the web console at / and /console/… (static files, no auth)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


RATE_HEADERS = {name: {"description": desc, "schema": {"type": "integer"}} for name, desc in (
    ("RateLimit-Limit", "requests allowed in the current window"),
    ("RateLimit-Remaining", "requests left in the current window"),
    ("RateLimit-Reset", "seconds until the window resets"))}


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document plus what the Door answers on every ``/v1`` operation: 401, and 429 with its headers."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    for path, ops in doc.get("paths", {}).items():
        if not path.startswith("/v1"):
            continue
        for op in ops.values():
            responses = op.setdefault("responses", {})
            responses.setdefault("401", {"description": "missing or invalid API key"})
            responses.setdefault("429", {
                "description": "rate limit (per API key, per client address, or per address for failed keys; "
                               "ERASEPRO_RATE_LIMIT*), the tenant's active-job limit, or its storage quota "
                               "(ERASEPRO_TENANT_STORAGE: the body's `quota` and `used`, in bytes)",
                "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}},
                            **RATE_HEADERS}})
    app.openapi_schema = doc
    return doc


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[:5])
        return JSONResponse(status_code=422, content={"detail": errors, "message": f"invalid input: {fields}"})

    @app.exception_handler(redis.exceptions.RedisError)
    async def _redis_down(request: Request, exc: redis.exceptions.RedisError) -> JSONResponse:
        log.warning("redis error on %s: %s", request.url.path, exc)
        return JSONResponse(status_code=503, content={"detail": "the job store (Redis) is unavailable"},
                            headers={"Retry-After": "5"})

    @app.exception_handler(StorageError)
    async def _storage_down(request: Request, exc: StorageError) -> JSONResponse:
        if isinstance(exc, ObjectNotFound):  # the manifest names a file the store lost
            return JSONResponse(status_code=404, content={"detail": "checkpoint file not found"})
        log.warning("artifact storage: %s", exc)
        return JSONResponse(status_code=503, content={"detail": "the artifact storage is unavailable"},
                            headers={"Retry-After": "5"})

    @app.exception_handler(IndexRebuilding)
    async def _reindexing(request: Request, exc: IndexRebuilding) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "5"})

    @app.exception_handler(TooManyJobs)
    async def _too_many(request: Request, exc: TooManyJobs) -> JSONResponse:
        return JSONResponse(status_code=429, content={"detail": str(exc), "limit": exc.limit},
                            headers={"Retry-After": str(RETRY_AFTER_LIMIT_S)})

    @app.exception_handler(QuotaExceeded)
    async def _quota(request: Request, exc: QuotaExceeded) -> JSONResponse:
        return JSONResponse(status_code=429, content={"detail": str(exc), "quota": exc.quota, "used": exc.used})

    @app.exception_handler(RegistryError)
    async def _registry(request: Request, exc: RegistryError) -> JSONResponse:
        log.error("base-model registry: %s", exc)
        return JSONResponse(status_code=503, content={"detail": f"base-model registry unusable: {exc}"})


app = create_app()
