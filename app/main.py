"""The ASGI application: ``uvicorn app.main:app`` (or ``erasepro serve``).

Routes (all under ``/v1`` need ``Authorization: Bearer <key>``)::

    POST   /v1/erasures                          submit (202; Idempotency-Key honoured)
    GET    /v1/erasures                          the caller's jobs, newest first, paginated
    GET    /v1/erasures/{id}                     status, progress, report, error, links
    DELETE /v1/erasures/{id}                     cancel a queued/running job, or delete a finished one
    GET    /v1/erasures/{id}/events              the job's event log (JSON pages, or SSE)
    GET    /v1/erasures/{id}/deliveries          every webhook delivery attempt, with its target
    GET    /v1/erasures/{id}/checkpoint          ?format=delta|diffusers (Content-Length, ETag, Range)
    POST   /v1/erasures/{id}/generate            images from the edited model (PNG, JSON, or 202 + job)
    POST   /v1/base-models/{name}/generate       the same from the unedited model
    GET    /v1/generations/{id}[/images]         poll a generation that answered 202
    GET    /v1/base-models                       the registry
    POST   /v1/webhook-endpoints                 register a tenant endpoint (201; its secret, shown once)
    GET    /v1/webhook-endpoints                 the tenant's endpoints, paginated (no secrets)
    GET/PATCH/DELETE /v1/webhook-endpoints/{id}  read, change, delete an endpoint
    POST   /v1/webhook-endpoints/{id}/rotate-secret   a new secret (the old one signs too for grace_s)
    GET    /healthz  /readyz  /docs  /openapi.json
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.console import router as console_router
from app.door import Door
from app.routers import ROUTERS
from app.service import IndexRebuilding, Service, TooManyJobs
from erasepro_jobs.registry import RegistryError
from erasepro_jobs.settings import Settings
from erasepro_jobs.storage import ObjectNotFound, StorageError

log = logging.getLogger("erasepro.api")

RETRY_AFTER_LIMIT_S = 10


# ------------------------------------------------------------------------------------------------- app
def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API. ``settings`` default to the environment; Redis is connected at startup."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        svc = Service.create(settings)
        app.state.service = svc
        try:
            yield
        finally:
            await svc.close()

    app = FastAPI(
        title="ErasePro",
        version="0.1.0",
        summary="Closed-form concept erasure for text-to-image diffusion models, as a service.",
        lifespan=lifespan,
    )
    app.add_middleware(Door, max_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s)
    app.state.settings = settings  # the Cfg dependency of the routers
    _install_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(console_router)  # the web console at / and /console/… (static files, no auth)
    return app


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

    @app.exception_handler(RegistryError)
    async def _registry(request: Request, exc: RegistryError) -> JSONResponse:
        log.error("base-model registry: %s", exc)
        return JSONResponse(status_code=503, content={"detail": f"base-model registry unusable: {exc}"})


app = create_app()
