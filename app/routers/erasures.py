"""``/v1/erasures``: submit, list, read, cancel and delete an erasure, and download its checkpoint."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic.json_schema import SkipJsonSchema
from starlette.concurrency import run_in_threadpool
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from app.bounds import check_erasure, check_memory
from app.deps import Cfg, JobId, Svc, Tenant, not_found, require_model, require_webhook_target, validation_error
from app.problems import problem
from app.schemas import (
    MAX_IDEMPOTENCY_KEY,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE,
    METADATA_KEY_RE,
    ErasureAccepted,
    ErasureList,
    ErasureRequest,
    ErasureView,
    ExportAccepted,
    Status,
    omittable,
)
from app.service import IdempotencyConflict, Service
from erasepro_core.formats import FormatError, check_format
from erasepro_jobs import memory, store
from erasepro_jobs.listing import cursor_pattern, decode_cursor, encode_cursor
from erasepro_jobs.storage import Storage
from erasepro_jobs.webhooks import new_secret

router = APIRouter(tags=["erasures"])


# ------------------------------------------------------------------------------------------ conditionals
def _etags(header: str) -> list[str]:
    return [t.strip() for t in header.split(",") if t.strip()]


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def conditional_response(request: Request, etag: str, size: int) -> Response | None:
    """RFC 9110 §13 for one strong ``etag``: If-Match (strong comparison; ``*``) → 412, then If-None-Match
    (weak comparison; ``*``) → 304 for GET/HEAD; then a Range the file cannot satisfy → 416/400 (problem
    details)."""
    if_match = request.headers.get("if-match")
    if if_match is not None:
        tags = _etags(if_match)
        if "*" not in tags and etag not in tags:  # strong: a W/ tag never matches
            return problem(412, f"If-Match does not match the current ETag {etag}", {"ETag": etag},
                           request.url.path)
    if_none = request.headers.get("if-none-match")
    if if_none is not None:
        tags = _etags(if_none)
        if "*" in tags or etag in [_opaque(t) for t in tags]:
            if request.method in ("GET", "HEAD"):
                return Response(status_code=304, headers={"ETag": etag})
            return problem(412, "If-None-Match matched the current ETag", None, request.url.path)
    http_range = request.headers.get("range")
    if http_range is not None and request.method == "GET":
        try:
            FileResponse._parse_range_header(http_range, size)
        except MalformedRangeHeader as exc:
            return problem(400, f"Range {http_range!r}: {exc.content}", None, request.url.path)
        except RangeNotSatisfiable:
            return problem(416, f"Range {http_range!r} is outside the {size}-byte file",
                           {"Content-Range": f"bytes */{size}"}, request.url.path)
    return None


def body_hash(model: Any) -> str:
    return hashlib.sha256(json.dumps(model.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


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


@router.post("/v1/erasures", tags=["erasures"], status_code=202, response_model=ErasureAccepted,
                        responses={409: {"description": "Idempotency-Key reused with a different body"},
                     415: {"description": "not JSON"}, 413: {"description": "body too large"}})
async def submit_erasure(
    body: ErasureRequest, tenant: Tenant, svc: Svc, settings: Cfg, response: Response,
    idempotency_key: Annotated[omittable(str, max_length=MAX_IDEMPOTENCY_KEY), Header()] = None,
) -> dict:
    """Queue an erasure of a registered base model. Answers 202 with the job id and links."""
    spec = body.to_spec()
    check_erasure(spec, require_model(svc, body.base_model, ("body", "base_model")), settings.max_erase_cost,
                  settings.job_memory)
    timeout = body.timeout_s or settings.erase_timeout_s
    if timeout > settings.max_erase_timeout_s:
        raise validation_error(("body", "timeout_s"),
                               f"timeout_s must be at most {settings.max_erase_timeout_s} on this server")
    if idempotency_key is not None and (not idempotency_key.strip() or not idempotency_key.isprintable()):
        raise validation_error(("header", "idempotency-key"), "must be 1-255 printable characters")
    hook: dict[str, Any] | None = None
    if body.webhook is not None:
        await require_webhook_target(body.webhook, settings, ("body", "webhook"))
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

@router.get("/v1/erasures", tags=["erasures"], response_model=ErasureList)
async def list_erasures(
    request: Request, tenant: Tenant, svc: Svc,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[omittable(str, pattern=cursor_pattern()),
                      Query(description="The previous page's next_cursor.")] = None,
    status: Annotated[Status | SkipJsonSchema[None], Query(description="Only jobs in this status.")] = None,
) -> dict:
    """The caller's erasures, newest first; pass ``next_cursor`` back as ``cursor`` for the next page
    (``null``: the end). ``?status=succeeded&metadata[team]=red`` keeps the jobs in that status whose metadata
    has every pair.

    Each request examines at most 500 of the caller's erasures (``LIST_SCAN_BUDGET``): with a filter that few
    jobs match, a page may hold fewer than ``limit`` items, or none, and still carry a ``next_cursor`` - keep
    following it until it is ``null``."""
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError as exc:
        raise validation_error(("query", "cursor"), str(exc)) from None
    wanted = metadata_filter(request.query_params.multi_items())
    items, nxt = await svc.list_erasures(tenant, limit, after, status=status, metadata=wanted)
    return {"items": items, "next_cursor": encode_cursor(nxt) if nxt else None}

@router.get("/v1/erasures/{job_id}", tags=["erasures"], response_model=ErasureView,
         responses={404: {"description": "no such erasure for this tenant"}})
async def get_erasure(job_id: JobId, tenant: Tenant, svc: Svc) -> dict:
    view = await svc.erasure(tenant, job_id)
    if view is None:
        raise not_found()
    return view

@router.post("/v1/erasures/{job_id}/cancel", tags=["erasures"], status_code=202, response_model=ErasureView,
             responses={202: {"description": "cancelled (a queued job), or cancellation requested (a running job "
                                             "stops at its next progress step: `cancel_requested`)"},
                        404: {"description": "no such erasure for this tenant"},
                        409: {"description": "the erasure has finished: nothing to cancel"}})
async def cancel_erasure(job_id: JobId, tenant: Tenant, svc: Svc) -> dict:
    """Cancel a queued or running erasure (OpenAI's and Replicate's ``POST …/cancel``). The job ends
    ``cancelled`` and its webhook and event log say ``erasure.cancelled``; then ``DELETE`` removes it."""
    view = await svc.erasure(tenant, job_id)
    if view is None:
        raise not_found()
    if view["status"] not in store.ACTIVE:
        raise HTTPException(409, f"erasure {job_id} is {view['status']}: only a queued or running job can be "
                                 "cancelled")
    await svc.cancel(tenant, job_id)
    return await svc.erasure(tenant, job_id) or view

@router.delete("/v1/erasures/{job_id}", tags=["erasures"], status_code=204, response_class=Response,
               responses={204: {"description": "deleted with its checkpoint and exports; now 404"},
                          404: {"description": "no such erasure for this tenant"},
                          409: {"description": "the erasure is queued or running: cancel it first "
                                               "(POST /v1/erasures/{job_id}/cancel)"}})
async def delete_erasure(job_id: JobId, tenant: Tenant, svc: Svc) -> Response:
    """Delete a finished erasure (succeeded, failed or cancelled) and its checkpoint; afterwards it is 404."""
    view = await svc.erasure(tenant, job_id)
    if view is None:
        raise not_found()
    if view["status"] in store.ACTIVE:
        raise HTTPException(409, f"erasure {job_id} is {view['status']}: cancel it first (POST "
                                 f"/v1/erasures/{job_id}/cancel), then delete it once it has stopped")
    await svc.delete(tenant, job_id)
    return Response(status_code=204)

@router.head("/v1/erasures/{job_id}/checkpoint", include_in_schema=False, response_model=None)
@router.get("/v1/erasures/{job_id}/checkpoint", tags=["erasures"], response_model=None,
         responses={200: {"content": {"application/octet-stream": {}, "application/x-tar": {}},
                          "description": "the checkpoint (Range supported)"},
                    202: {"model": ExportAccepted, "description": "diffusers/lora/kohya export in progress"},
                    206: {"content": {"application/octet-stream": {}, "application/x-tar": {},
                                      "multipart/byteranges": {}}, "description": "the Range asked for"},
                    304: {"description": "If-None-Match matched"},
                    307: {"description": "the export finished meanwhile: the same URL serves it now"},
                    400: {"description": "a malformed Range header"},
                    412: {"description": "If-Match did not match"},
                    416: {"description": "Range not satisfiable"},
                    404: {"description": "no such erasure for this tenant"},
                    409: {"description": "the erasure has not succeeded"},
                    422: {"description": "the format cannot carry this erasure (the sites are named)"}})
async def checkpoint(
    job_id: JobId, tenant: Tenant, svc: Svc, request: Request,
    format: Literal["delta", "diffusers", "lora", "kohya"] = "delta",
) -> Response:
    """The safetensors delta (small), or a tar exported on demand, each with a model card (README.md): the full
    edited diffusers pipeline (``diffusers``), an exact LoRA in diffusers/PEFT keys (``lora``:
    ``pipe.load_lora_weights(folder)``) or in kohya keys (``kohya``: ComfyUI, A1111)."""
    view = await svc.erasure(tenant, job_id)
    if view is None:
        raise not_found()
    if view["status"] != "succeeded":
        raise HTTPException(409, f"erasure {job_id} is {view['status']}; only succeeded jobs have checkpoints")
    manifest = await svc.manifest(tenant, job_id)
    if manifest is None:
        raise not_found("checkpoint")
    if format in ("lora", "kohya"):  # refused at the door when no loader of the format addresses every site
        report = manifest.get("report") or {}
        try:
            check_format(report.get("family", ""), [s["site"] for s in report.get("sites", []) if "site" in s],
                         format)
        except FormatError as exc:
            raise HTTPException(422, str(exc)) from exc
    name = store.DELTA_FILE if format == "delta" else store.EXPORT_FILES[format]
    entry = (manifest.get("files") or {}).get(name)
    if entry is None:
        if format == "delta":
            raise not_found("checkpoint")
        return await _export(svc, tenant, job_id, view, format)
    key = store.checkpoint_key(tenant, job_id, name)
    etag = f'"{entry["sha256"]}"'
    size = int(entry["size"])
    early = conditional_response(request, etag, size)
    if early is not None:
        return early
    media = "application/octet-stream" if format == "delta" else "application/x-tar"
    filename = (f"erasepro-{job_id}.delta.safetensors" if format == "delta" else
                f"erasepro-{job_id}.tar" if format == "diffusers" else f"erasepro-{job_id}-{format}.tar")
    headers = {"ETag": etag, "X-Content-SHA256": entry["sha256"],
               "Cache-Control": "private, max-age=31536000, immutable"}
    path = svc.storage.local_path(key)
    if path is not None:  # the file system: zero-copy (sendfile), Range handled by Starlette
        if not await run_in_threadpool(path.is_file):  # deleted between the manifest read and now
            raise not_found("checkpoint")
        return FileResponse(path, media_type=media, filename=filename, headers=headers)
    return await stream_object(request, svc.storage, key, size, media, filename, headers)


async def stream_object(request: Request, storage: Storage, key: str, size: int, media: str, filename: str,
                        headers: dict[str, str]) -> Response:
    """Serve an object from a remote store the way FileResponse serves a file: 200, or 206 for one Range
    (``Content-Range``) or several (``multipart/byteranges``), streamed 1 MiB at a time (bounded memory).
    ``conditional_response`` has already answered 304/412/416/400."""
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Disposition": f'attachment; filename="{filename}"'}
    http_range = request.headers.get("range")
    if_range = request.headers.get("if-range")
    ranges: list[tuple[int, int]] = []
    if http_range is not None and (if_range is None or if_range == headers["ETag"]):
        ranges = FileResponse._parse_range_header(http_range, size)
    head = request.method == "HEAD"
    if len(ranges) == 1:
        (a, b), = ranges
        body = iter(()) if head else await run_in_threadpool(storage.read, key, a, b)
        return StreamingResponse(body, status_code=206, media_type=media, headers={
            **headers, "Content-Range": f"bytes {a}-{b - 1}/{size}", "Content-Length": str(b - a)})
    if ranges:
        boundary = secrets.token_hex(13)
        parts = [(a, b, f"--{boundary}\r\nContent-Type: {media}\r\nContent-Range: bytes {a}-{b - 1}/{size}"
                        "\r\n\r\n".encode("latin-1")) for a, b in ranges]
        tail = f"--{boundary}--".encode("latin-1")
        length = sum(len(h) + (b - a) + 2 for a, b, h in parts) + len(tail)

        def multipart():
            for a, b, h in parts:
                yield h
                yield from storage.read(key, a, b)
                yield b"\r\n"
            yield tail

        return StreamingResponse(iter(()) if head else multipart(), status_code=206, headers={
            **headers, "Content-Type": f"multipart/byteranges; boundary={boundary}", "Content-Length": str(length)})
    body = iter(()) if head else await run_in_threadpool(storage.read, key)
    return StreamingResponse(body, media_type=media, headers={**headers, "Content-Length": str(size)})

async def _export(svc: Service, tenant: str, job_id: str, view: dict, fmt: str = "diffusers") -> Response:
    info = require_model(svc, view["base_model"], ("path", "job_id"))
    check_memory(f"{fmt} export", memory.export_bytes(info, fmt), svc.settings.job_memory, ("query", "format"))
    export_id = await svc.request_export(tenant, job_id, view["base_model"], fmt)
    rec = await svc.record(export_id, tenant, "export")
    if rec is None:  # the pointer outlived its job record (expired or flushed): start a fresh export
        await svc.forget_export(job_id, fmt)
        export_id = await svc.request_export(tenant, job_id, view["base_model"], fmt)
        rec = await svc.record(export_id, tenant, "export")
    status = rec.get("status", "queued") if rec else "queued"
    if status in ("failed", "cancelled"):
        await svc.forget_export(job_id, fmt)
        raise HTTPException(409, f"the {fmt} export failed: {rec.get('error') if rec else ''}; "
                                 "request it again to retry")
    if status == "succeeded":  # finished between our two reads: the manifest has it now
        manifest = await svc.manifest(tenant, job_id)
        if manifest and store.EXPORT_FILES[fmt] in (manifest.get("files") or {}):
            return Response(status_code=307, headers={
                "Location": f"/v1/erasures/{job_id}/checkpoint?format={fmt}"})
    return JSONResponse(status_code=202, headers={"Retry-After": "2"}, content={
        "erasure_id": job_id, "export_job": export_id, "status": status, "retry_after_s": 2})
