"""The ASGI application: ``uvicorn app.main:app`` (or ``erasepro serve``).

Routes (all under ``/v1`` need ``Authorization: Bearer <key>``)::

    POST   /v1/erasures                          submit (202; Idempotency-Key honoured)
    GET    /v1/erasures                          the caller's jobs, newest first, paginated
    GET    /v1/erasures/{id}                     status, progress, report, error, links
    DELETE /v1/erasures/{id}                     delete a finished job and its checkpoint (409 while it runs)
    POST   /v1/erasures/{id}/cancel              cancel a queued/running job (202; 409 once finished)
    GET    /v1/erasures/{id}/events              the job's event log (JSON pages, or SSE)
    GET    /v1/erasures/{id}/deliveries          every webhook delivery attempt, with its target
    GET    /v1/erasures/{id}/checkpoint          ?format=delta|diffusers (Content-Length, ETag, Range)
    GET/POST /v1/erasures/{id}/evaluations      list the erasure's evaluations, or start one (attacks or a judge; 202)
    GET    /v1/erasures/{id}/evaluations/{eval_id}   one evaluation
    POST   /v1/erasures/{id}/evaluations/{eval_id}/cancel   cancel a queued/running evaluation (202)
    GET    /v1/erasures/{id}/evaluations/{eval_id}/images/{name}   a judged before/after image (PNG)
    POST   /v1/erasures/{id}/generate            images from the edited model (PNG, JSON, or 202 + job)
    POST   /v1/base-models/{name}/generate       the same from the unedited model
    GET    /v1/generations/{id}[/images]         poll a generation that answered 202
    POST   /v1/generations/{id}/cancel           cancel a queued/running generation (202)
    DELETE /v1/generations/{id}                  delete a finished one and its images (409 while it runs)
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

Every error answer is RFC 9457 problem details (``application/problem+json``, :mod:`app.problems`); the
OpenAPI document states every status of every operation (:mod:`app.contract`).

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
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from app import contract
from app.audit import start_audit, stop_audit
from app.console import router as console_router
from app.docs import install_docs
from app.door import Door
from app.headers import SecurityHeaders
from app.metrics import router as metrics_router
from app.observe import Observe
from app.problems import field_errors, problem, summarize
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
        generate_unique_id_function=lambda route: route.name,  # operationId: the handler's name
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


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document completed by :func:`app.contract.complete` (problem details on every error status,
    the Bearer scheme, links, the registered base models as a closed set once the service is up); rebuilt when
    the registry's names change."""
    svc = getattr(app.state, "service", None)
    names = sorted(svc.registry.models()) if svc is not None else []
    if app.openapi_schema and getattr(app.state, "openapi_models", None) == names:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    contract.complete(doc, names)
    app.openapi_schema, app.state.openapi_models = doc, names
    return doc


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        extensions: dict = {}
        if exc.status_code == 405:  # the router's Allow names one route's methods: name the resource's
            allow = contract.allowed_methods(request.app, request.scope)
            headers["Allow"] = ", ".join(allow)
            extensions["allow"] = allow
            detail = f"{request.method} is not supported here; the resource supports {', '.join(allow)}"
        elif isinstance(exc.detail, dict):
            extensions = {k: v for k, v in exc.detail.items() if k != "detail"}
            detail = str(exc.detail.get("detail", ""))
        else:
            detail = str(exc.detail)
        return problem(exc.status_code, detail, headers, request.url.path, **extensions)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(list(exc.errors()))
        return problem(422, summarize(errors), None, request.url.path, errors=errors)

    @app.exception_handler(redis.exceptions.RedisError)
    async def _redis_down(request: Request, exc: redis.exceptions.RedisError) -> JSONResponse:
        log.warning("redis error on %s: %s", request.url.path, exc)
        return problem(503, "the job store (Redis) is unavailable", {"Retry-After": "5"}, request.url.path)

    @app.exception_handler(StorageError)
    async def _storage_down(request: Request, exc: StorageError) -> JSONResponse:
        if isinstance(exc, ObjectNotFound):  # the manifest names a file the store lost
            return problem(404, "checkpoint file not found", None, request.url.path)
        log.warning("artifact storage: %s", exc)
        return problem(503, "the artifact storage is unavailable", {"Retry-After": "5"}, request.url.path)

    @app.exception_handler(IndexRebuilding)
    async def _reindexing(request: Request, exc: IndexRebuilding) -> JSONResponse:
        return problem(503, str(exc), {"Retry-After": "5"}, request.url.path)

    @app.exception_handler(TooManyJobs)
    async def _too_many(request: Request, exc: TooManyJobs) -> JSONResponse:
        return problem(429, str(exc), {"Retry-After": str(RETRY_AFTER_LIMIT_S)}, request.url.path,
                       limit=exc.limit)

    @app.exception_handler(QuotaExceeded)
    async def _quota(request: Request, exc: QuotaExceeded) -> JSONResponse:
        return problem(429, str(exc), {"Retry-After": str(RETRY_AFTER_LIMIT_S)}, request.url.path,
                       quota=exc.quota, used=exc.used)

    @app.exception_handler(RegistryError)
    async def _registry(request: Request, exc: RegistryError) -> JSONResponse:
        log.error("base-model registry: %s", exc)
        return problem(503, f"base-model registry unusable: {exc}", {"Retry-After": "30"}, request.url.path)


app = create_app()
