"""The ASGI application: ``uvicorn app.main:app`` (or ``erasepro serve``).

Routes (all under ``/v1`` need ``Authorization: Bearer <key>``)::

    POST   /v1/erasures                          submit (202; Idempotency-Key honoured)
    GET    /v1/erasures                          the caller's jobs, newest first, paginated
    GET    /v1/erasures/{id}                     status, progress, report, error, links
    DELETE /v1/erasures/{id}                     cancel a queued/running job, or delete a finished one
    GET    /v1/erasures/{id}/events              the job's event log (JSON pages, or SSE)
    GET    /v1/erasures/{id}/checkpoint          ?format=delta|diffusers (Content-Length, ETag, Range)
    POST   /v1/erasures/{id}/generate            images from the edited model (PNG, JSON, or 202 + job)
    POST   /v1/base-models/{name}/generate       the same from the unedited model
    GET    /v1/generations/{id}[/images]         poll a generation that answered 202
    GET    /v1/base-models                       the registry
    GET    /healthz  /readyz  /docs  /openapi.json
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import redis.exceptions
from fastapi import FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import store
from app.bounds import check_erasure, check_generation
from app.config import Settings
from app.console import router as console_router
from app.deps import JobId, Svc, Tenant, not_found
from app.evaluations_routes import router as evaluations_router
from app.events_routes import router as events_router
from app.registry import BaseModelInfo, ModelUnavailable, RegistryError
from app.schemas import (
    MAX_IDEMPOTENCY_KEY,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE,
    METADATA_KEY_RE,
    BaseModelList,
    ErasureAccepted,
    ErasureList,
    ErasureRequest,
    ErasureView,
    ExportAccepted,
    GeneratedImages,
    GenerateRequest,
    GenerationView,
    Status,
)
from app.service import (
    IdempotencyConflict,
    Service,
    TooManyJobs,
    decode_cursor,
    encode_cursor,
    generation_view,
)
from app.webhooks import check_target, new_secret

log = logging.getLogger("erasepro.api")

WaitS = Annotated[float | None, Query(ge=0, le=3600, allow_inf_nan=False,
                                      description="Seconds to wait before answering 202 (capped by the server's "
                                                  "limit; 0 answers 202 at once).")]


RETRY_AFTER_LIMIT_S = 10


# ------------------------------------------------------------------------------------------ conditionals
def _etags(header: str) -> list[str]:
    return [t.strip() for t in header.split(",") if t.strip()]


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def conditional_response(request: Request, etag: str, size: int) -> Response | None:
    """RFC 9110 §13 for one strong ``etag``: If-Match (strong comparison; ``*``) → 412, then If-None-Match
    (weak comparison; ``*``) → 304 for GET/HEAD; then a Range the file cannot satisfy → JSON 416/400."""
    if_match = request.headers.get("if-match")
    if if_match is not None:
        tags = _etags(if_match)
        if "*" not in tags and etag not in tags:  # strong: a W/ tag never matches
            return JSONResponse(status_code=412, headers={"ETag": etag},
                                content={"detail": f"If-Match does not match the current ETag {etag}"})
    if_none = request.headers.get("if-none-match")
    if if_none is not None:
        tags = _etags(if_none)
        if "*" in tags or etag in [_opaque(t) for t in tags]:
            if request.method in ("GET", "HEAD"):
                return Response(status_code=304, headers={"ETag": etag})
            return JSONResponse(status_code=412, content={"detail": "If-None-Match matched the current ETag"})
    http_range = request.headers.get("range")
    if http_range is not None and request.method == "GET":
        try:
            FileResponse._parse_range_header(http_range, size)
        except MalformedRangeHeader as exc:
            return JSONResponse(status_code=400, content={"detail": f"Range {http_range!r}: {exc.content}"})
        except RangeNotSatisfiable:
            return JSONResponse(status_code=416, headers={"Content-Range": f"bytes */{size}"},
                                content={"detail": f"Range {http_range!r} is outside the {size}-byte file"})
    return None


# ------------------------------------------------------------------------------------------- middleware
def _json_response(status: int, detail: Any, headers: dict[str, str] | None = None) -> tuple[dict, bytes]:
    payload = json.dumps({"detail": detail}).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http.response.start", "status": status, "headers": hdrs}, payload


class Door:
    """Everything checked before a handler runs, in this order, with JSON errors:

    1. ``/v1``: the API key (401) — before the body is read, so no key + bad JSON is 401, not 422;
    2. bodies (POST/PUT/PATCH): ``Content-Type`` JSON (415), size (413, chunked included), and the whole body
       within ``body_timeout_s`` (408: a slow-body client does not hold a connection for ever).

    The tenant is left in ``scope["state"]["tenant"]`` for the handlers.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["path"].startswith("/v1/") or scope["path"] == "/v1":
            tenant = self._authenticate(scope, headers.get(b"authorization", b""))
            if tenant is None:
                await self._reply(send, 401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                                  {"WWW-Authenticate": "Bearer"})
                return
            scope.setdefault("state", {})["tenant"] = tenant
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if ctype != "application/json" and not (ctype.startswith("application/") and ctype.endswith("+json")):
            await self._reply(send, 415, f"Content-Type must be application/json, got {ctype or 'nothing'!r}")
            return
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reply(send, 413, f"request body larger than {self.max_bytes} bytes")
            return
        body = await self._read_body(receive, send)
        if body is None:
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authenticate(self, scope: Scope, header: bytes) -> str | None:
        scheme, _, key = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer":
            return None
        svc: Service = scope["app"].state.service
        return svc.keys.authenticate(key.strip())

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or ``None`` after answering 413/408 (or when the client went away)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                await self._reply(send, 408, f"the request body did not arrive within {self.body_timeout_s:g} s",
                                  {"Connection": "close"})
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reply(send, 413, f"request body larger than {self.max_bytes} bytes")
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    @staticmethod
    async def _reply(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        start, payload = _json_response(status, detail, headers)
        await send(start)
        await send({"type": "http.response.body", "body": payload})


# ------------------------------------------------------------------------------------------ dependencies
def body_hash(model: Any) -> str:
    return hashlib.sha256(json.dumps(model.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def validation_error(loc: tuple[str, ...], msg: str, kind: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg}])


def metadata_filter(params: list[tuple[str, str]]) -> dict[str, str]:
    """``metadata[k]=v`` query parameters -> ``{k: v}`` (422 on a malformed key or too many)."""
    wanted: dict[str, str] = {}
    for name, value in params:
        if not name.startswith("metadata"):
            continue
        key = name[len("metadata["):-1] if name.startswith("metadata[") and name.endswith("]") else ""
        if not re.match(METADATA_KEY_RE, key) or len(value) > MAX_METADATA_VALUE:
            raise validation_error(("query", name), "filter by metadata as metadata[key]=value (key: 1-40 of "
                                   "A-Z a-z 0-9 _ . -)")
        wanted[key] = value
    if len(wanted) > MAX_METADATA_KEYS:
        raise validation_error(("query", "metadata"), f"at most {MAX_METADATA_KEYS} metadata filters")
    return wanted


def require_model(svc: Service, name: str, loc: tuple[str, ...]) -> BaseModelInfo:
    """The registered, installed model (decided by :meth:`Registry.require`); 422 naming ``loc`` otherwise."""
    try:
        return svc.registry.require(name)
    except ModelUnavailable as exc:
        raise validation_error(loc, str(exc)) from None


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
    _install_handlers(app)
    _routes(app, settings)
    app.include_router(console_router)  # the web console at / and /console/… (static files, no auth)
    app.include_router(events_router)
    app.include_router(evaluations_router)
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

    @app.exception_handler(TooManyJobs)
    async def _too_many(request: Request, exc: TooManyJobs) -> JSONResponse:
        return JSONResponse(status_code=429, content={"detail": str(exc), "limit": exc.limit},
                            headers={"Retry-After": str(RETRY_AFTER_LIMIT_S)})

    @app.exception_handler(RegistryError)
    async def _registry(request: Request, exc: RegistryError) -> JSONResponse:
        log.error("base-model registry: %s", exc)
        return JSONResponse(status_code=503, content={"detail": f"base-model registry unusable: {exc}"})


def _routes(app: FastAPI, settings: Settings) -> None:  # noqa: C901 - one place for the route table
    # ------------------------------------------------------------------------------------- health
    @app.get("/healthz", tags=["health"], summary="The API process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Redis answers and at least one worker is alive",
             responses={503: {"description": "not ready"}})
    async def readyz(svc: Svc) -> JSONResponse:
        try:
            await svc.r.ping()
            workers = await svc.workers_alive()
        except redis.exceptions.RedisError as exc:
            return JSONResponse(status_code=503, content={"ready": False, "redis": f"error: {exc}", "workers": 0})
        ok = workers > 0
        return JSONResponse(status_code=200 if ok else 503,
                            content={"ready": ok, "redis": "ok", "workers": workers})

    # -------------------------------------------------------------------------------- base models
    @app.get("/v1/base-models", tags=["base models"], response_model=BaseModelList)
    async def list_base_models(tenant: Tenant, svc: Svc) -> dict:
        return {"items": [m.public() for m in svc.registry.models().values()]}

    # ---------------------------------------------------------------------------------- erasures
    @app.post("/v1/erasures", tags=["erasures"], status_code=202, response_model=ErasureAccepted,
                            responses={409: {"description": "Idempotency-Key reused with a different body"},
                         415: {"description": "not JSON"}, 413: {"description": "body too large"}})
    async def submit_erasure(
        body: ErasureRequest, tenant: Tenant, svc: Svc, response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=MAX_IDEMPOTENCY_KEY)] = None,
    ) -> dict:
        """Queue an erasure of a registered base model. Answers 202 with the job id and links."""
        spec = body.to_spec()
        check_erasure(spec, require_model(svc, body.base_model, ("body", "base_model")), settings.max_erase_cost)
        timeout = body.timeout_s or settings.erase_timeout_s
        if timeout > settings.max_erase_timeout_s:
            raise validation_error(("body", "timeout_s"),
                                   f"timeout_s must be at most {settings.max_erase_timeout_s} on this server")
        if idempotency_key is not None and (not idempotency_key.strip() or not idempotency_key.isprintable()):
            raise validation_error(("header", "idempotency-key"), "must be 1-255 printable characters")
        hook: dict[str, Any] | None = None
        if body.webhook is not None:
            problem = await run_in_threadpool(check_target, body.webhook, settings.webhook_allow_private)
            if problem:
                raise validation_error(("body", "webhook"), problem)
            hook = {"webhook": body.webhook, "webhook_events": body.webhook_events, "webhook_secret": new_secret()}
        try:
            job_id, created = await svc.submit_erasure(
                tenant=tenant, base_model=body.base_model, spec=spec.model_dump(mode="json"),
                request=body.model_dump(mode="json", exclude_unset=True), timeout=timeout,
                idempotency_key=idempotency_key, body_hash=body_hash(body), metadata=body.metadata,
                webhook=hook)
        except IdempotencyConflict:
            raise HTTPException(409, "this Idempotency-Key was already used with a different request body") from None
        view = await svc.erasure(tenant, job_id)
        response.headers["Location"] = f"/v1/erasures/{job_id}"
        if not created:
            response.headers["Idempotent-Replayed"] = "true"
        return {"id": job_id, "status": view["status"] if view else "queued", "links": view["links"] if view
                else {"self": f"/v1/erasures/{job_id}"},
                "webhook_secret": hook["webhook_secret"] if hook and created else None}

    @app.get("/v1/erasures", tags=["erasures"], response_model=ErasureList)
    async def list_erasures(
        request: Request, tenant: Tenant, svc: Svc,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        status: Annotated[Status | None, Query(description="Only jobs in this status.")] = None,
    ) -> dict:
        """The caller's erasures, newest first; pass ``next_cursor`` back as ``cursor`` for the next page.
        ``?status=succeeded&metadata[team]=red`` keeps the jobs in that status whose metadata has every pair."""
        try:
            after = decode_cursor(cursor) if cursor else None
        except ValueError as exc:
            raise validation_error(("query", "cursor"), str(exc)) from None
        wanted = metadata_filter(request.query_params.multi_items())
        match = None
        if status or wanted:
            def match(view: dict) -> bool:
                meta = view.get("metadata") or {}
                return (status is None or view["status"] == status) and all(
                    meta.get(k) == v for k, v in wanted.items())
        items, nxt = await svc.list_erasures(tenant, limit, after, match)
        return {"items": items, "next_cursor": encode_cursor(nxt) if nxt else None}

    @app.get("/v1/erasures/{job_id}", tags=["erasures"], response_model=ErasureView,
             responses={404: {"description": "no such erasure for this tenant"}})
    async def get_erasure(job_id: JobId, tenant: Tenant, svc: Svc) -> dict:
        view = await svc.erasure(tenant, job_id)
        if view is None:
            raise not_found()
        return view

    @app.delete("/v1/erasures/{job_id}", tags=["erasures"], status_code=202,
                responses={202: {"model": ErasureView, "description": "cancelled or cancellation requested"},
                           204: {"description": "finished job deleted with its artifacts"},
                           404: {"description": "no such erasure for this tenant"}})
    async def delete_erasure(job_id: JobId, tenant: Tenant, svc: Svc) -> Response:
        """Cancel a queued/running job (202), or delete a finished one and its checkpoint (204)."""
        view = await svc.erasure(tenant, job_id)
        if view is None:
            raise not_found()
        if view["status"] in store.ACTIVE:
            await svc.cancel(tenant, job_id)
            return JSONResponse(status_code=202, content=await svc.erasure(tenant, job_id) or view)
        await svc.delete(tenant, job_id)
        return Response(status_code=204)

    @app.head("/v1/erasures/{job_id}/checkpoint", include_in_schema=False, response_model=None)
    @app.get("/v1/erasures/{job_id}/checkpoint", tags=["erasures"], response_model=None,
             responses={200: {"content": {"application/octet-stream": {}, "application/x-tar": {}},
                              "description": "the checkpoint (Range supported)"},
                        202: {"model": ExportAccepted, "description": "diffusers export in progress"},
                        304: {"description": "If-None-Match matched"},
                        412: {"description": "If-Match did not match"},
                        416: {"description": "Range not satisfiable"},
                        404: {"description": "no such erasure for this tenant"},
                        409: {"description": "the erasure has not succeeded"}})
    async def checkpoint(
        job_id: JobId, tenant: Tenant, svc: Svc, request: Request,
        format: Literal["delta", "diffusers"] = "delta",
    ) -> Response:
        """The safetensors delta (small), or a tar of the full edited diffusers pipeline (exported on demand)."""
        view = await svc.erasure(tenant, job_id)
        if view is None:
            raise not_found()
        if view["status"] != "succeeded":
            raise HTTPException(409, f"erasure {job_id} is {view['status']}; only succeeded jobs have checkpoints")
        manifest = await svc.manifest(tenant, job_id)
        if manifest is None:
            raise not_found("checkpoint")
        name = store.DELTA_FILE if format == "delta" else store.PIPELINE_TAR
        entry = (manifest.get("files") or {}).get(name)
        if entry is None:
            if format == "delta":
                raise not_found("checkpoint")
            return await _export(svc, tenant, job_id, view)
        path = svc.erasure_dir(tenant, job_id) / name
        etag = f'"{entry["sha256"]}"'
        early = conditional_response(request, etag, int(entry["size"]))
        if early is not None:
            return early
        media = "application/octet-stream" if format == "delta" else "application/x-tar"
        filename = f"erasepro-{job_id}.delta.safetensors" if format == "delta" else f"erasepro-{job_id}.tar"
        return FileResponse(path, media_type=media, filename=filename,
                            headers={"ETag": etag, "X-Content-SHA256": entry["sha256"],
                                     "Cache-Control": "private, max-age=31536000, immutable"})

    async def _export(svc: Service, tenant: str, job_id: str, view: dict) -> Response:
        require_model(svc, view["base_model"], ("path", "job_id"))
        export_id = await svc.request_export(tenant, job_id, view["base_model"])
        rec = await svc.record(export_id, tenant, "export")
        if rec is None:  # the pointer outlived its job record (expired or flushed): start a fresh export
            await svc.r.delete(store.k_export(job_id))
            export_id = await svc.request_export(tenant, job_id, view["base_model"])
            rec = await svc.record(export_id, tenant, "export")
        status = rec.get("status", "queued") if rec else "queued"
        if status in ("failed", "cancelled"):
            await svc.r.delete(store.k_export(job_id))
            raise HTTPException(409, f"the diffusers export failed: {rec.get('error') if rec else ''}; "
                                     "request it again to retry")
        if status == "succeeded":  # finished between our two reads: the manifest has it now
            manifest = await svc.manifest(tenant, job_id)
            if manifest and store.PIPELINE_TAR in (manifest.get("files") or {}):
                return Response(status_code=307, headers={
                    "Location": f"/v1/erasures/{job_id}/checkpoint?format=diffusers"})
        return JSONResponse(status_code=202, headers={"Retry-After": "2"}, content={
            "erasure_id": job_id, "export_job": export_id, "status": status, "retry_after_s": 2})

    # ---------------------------------------------------------------------------------- generation
    async def _generate(svc: Service, tenant: str, base_model: str, erasure_id: str | None,
                        body: GenerateRequest, wait: float | None, accept: str) -> Response:
        job_id = await svc.submit_generation(tenant=tenant, base_model=base_model, erasure_id=erasure_id,
                                             params=body.model_dump(mode="json"))
        limit = settings.generate_wait_s
        await svc.wait_done(job_id, limit if wait is None else min(wait, limit))
        return await _generation_result(svc, tenant, job_id, accept, pending_status=202)

    async def _generation_result(svc: Service, tenant: str, job_id: str, accept: str,
                                 pending_status: int) -> Response:
        rec = await svc.record(job_id, tenant, "generation")
        if rec is None:
            raise not_found("generation")
        view = generation_view(rec)
        status = rec.get("status")
        if status in store.ACTIVE:
            return JSONResponse(status_code=pending_status, content=view,
                                headers={"Location": f"/v1/generations/{job_id}", "Retry-After": "1"})
        if status != "succeeded":
            erasure_id = rec.get("erasure_id")
            if erasure_id and await svc.erasure(tenant, erasure_id) is None:
                return JSONResponse(status_code=404, content={
                    "detail": f"the erasure {erasure_id} this generation used has been deleted", "job": view})
            return JSONResponse(status_code=409, content={
                "detail": f"generation {status}: {rec.get('error') or 'no images'}", "job": view})
        images = await svc.images(job_id)
        if not images:
            raise HTTPException(410, "the generated images have expired; generate again")
        params = json.loads(rec.get("params") or "{}")
        want_json = "application/json" in accept and "image/png" not in accept
        headers = {"X-Erasepro-Generation": job_id, "X-Erasepro-Seed": str(params.get("seed", 0))}
        if len(images) == 1 and not want_json:
            return Response(content=base64.b64decode(images[0]), media_type="image/png", headers=headers)
        return JSONResponse(headers=headers, content={
            "id": job_id, "images": images, "media_type": "image/png", "seed": params.get("seed", 0),
            "timings": view["timings"]})

    gen_responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {"image/png": {}, "application/json": {"schema": GeneratedImages.model_json_schema()}},
              "description": "one image as PNG, or several as base64 PNGs in JSON"},
        202: {"model": GenerationView, "description": "still running after the wait limit: poll the job"},
        404: {"description": "not found"}, 415: {"description": "not JSON"},
    }

    @app.post("/v1/erasures/{job_id}/generate", tags=["generation"], response_model=None,
              responses={**gen_responses, 409: {"description": "the erasure has not succeeded"}})
    async def generate_edited(job_id: JobId, body: GenerateRequest, tenant: Tenant, svc: Svc,
                              request: Request, wait: WaitS = None) -> Response:
        """Sample from the base model with this erasure's delta applied."""
        view = await svc.erasure(tenant, job_id)
        if view is None:
            raise not_found()
        if view["status"] != "succeeded":
            raise HTTPException(409, f"erasure {job_id} is {view['status']}; generation needs a succeeded erasure")
        check_generation(body, require_model(svc, view["base_model"], ("path", "job_id")))
        return await _generate(svc, tenant, view["base_model"], job_id, body, wait,
                               request.headers.get("accept", ""))

    @app.post("/v1/base-models/{name}/generate", tags=["generation"], response_model=None, responses=gen_responses)
    async def generate_base(name: Annotated[str, Path(max_length=64)], body: GenerateRequest, tenant: Tenant,
                            svc: Svc, request: Request, wait: WaitS = None) -> Response:
        """Sample from an unedited registered base model (to compare with an erasure)."""
        check_generation(body, require_model(svc, name, ("path", "name")))
        return await _generate(svc, tenant, name, None, body, wait, request.headers.get("accept", ""))

    @app.get("/v1/generations/{job_id}", tags=["generation"], response_model=GenerationView)
    async def get_generation(job_id: JobId, tenant: Tenant, svc: Svc) -> dict:
        rec = await svc.record(job_id, tenant, "generation")
        if rec is None:
            raise not_found("generation")
        return generation_view(rec)

    @app.delete("/v1/generations/{job_id}", tags=["generation"], status_code=202,
                responses={202: {"model": GenerationView, "description": "cancelled or cancellation requested"},
                           204: {"description": "finished generation deleted with its images"},
                           404: {"description": "no such generation for this tenant"}})
    async def delete_generation(job_id: JobId, tenant: Tenant, svc: Svc) -> Response:
        """Cancel a queued/running generation (202), or delete a finished one and its images (204)."""
        rec = await svc.record(job_id, tenant, "generation")
        if rec is None:
            raise not_found("generation")
        if rec.get("status") in store.ACTIVE:
            await svc.cancel(tenant, job_id)
            return JSONResponse(status_code=202, content=generation_view(
                await svc.record(job_id, tenant, "generation") or rec))
        await svc.delete_generation(job_id)
        return Response(status_code=204)

    @app.get("/v1/generations/{job_id}/images", tags=["generation"], response_model=None, responses=gen_responses)
    async def generation_images(job_id: JobId, tenant: Tenant, svc: Svc, request: Request) -> Response:
        """The images of a finished generation (202 with the job while it runs)."""
        return await _generation_result(svc, tenant, job_id, request.headers.get("accept", ""), pending_status=202)


app = create_app()
