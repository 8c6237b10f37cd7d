"""RFC 9457 problem details: the one shape of every error answer of the API.

Every ``4xx``/``5xx`` answer, whoever gives it (the Door middleware, a route, an exception handler, the router's
own 404/405), is ``application/problem+json``::

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "invalid input: body.edits: give at least one edit, or a preset",
     "instance": "/v1/erasures",
     "errors": [{"loc": ["body", "edits"], "msg": "give at least one edit, or a preset", "type": "value_error"}]}

``type`` is ``about:blank`` (RFC 9457 §4.2.1: the status code says it all), so ``title`` is the status's reason
phrase. Extension members (§3.2): ``errors`` (``400``/``422``: one entry per offending field, ``loc`` its path),
``limit`` (``429``: the limit hit), ``allow`` (``405``: the methods of the resource, as in the ``Allow``
header), ``guard`` and ``job`` (a generation refused by the prompt guard, or failed/cancelled). The OpenAPI
document declares the shape (:class:`Problem`) on every operation (:func:`error_responses`).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    """One offending input: where (``loc``: ``body``/``query``/``path``/``header`` and the field path), why."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details (extension members as listed; others may be added, so clients ignore unknown
    members)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "type": "about:blank", "title": "Not Found", "status": 404, "detail": "erasure not found",
        "instance": "/v1/erasures/0123456789abcdef0123456789abcdef"}]})

    type: str = Field(default="about:blank", description="A URI naming the problem type; about:blank here.")
    title: str = Field(description="The HTTP status's reason phrase.")
    status: int = Field(ge=400, le=599, description="The HTTP status code of the answer.")
    detail: str = Field(description="What went wrong, for a person (names the field, limit or state).")
    instance: str | None = Field(default=None, description="The request's path.")
    errors: list[FieldError] | None = Field(default=None, description="400/422: every offending field.")
    limit: int | None = Field(default=None, description="429: the limit that was reached.")
    quota: int | None = Field(default=None, description="429: the tenant's storage quota, in bytes.")
    used: int | None = Field(default=None, description="429: the bytes the tenant stores now.")
    allow: list[str] | None = Field(default=None, description="405: the methods this resource supports.")
    guard: dict[str, Any] | None = Field(default=None, description="A generation refused by the prompt guard: "
                                         "flagged, score, threshold, nearest erased concept, mode.")
    job: dict[str, Any] | None = Field(default=None, description="The generation job a 404/409/422 is about.")


TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}  # RFC 9110's names (Python has the old ones)


def title(status: int) -> str:
    if status in TITLES:
        return TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(status: int, detail: str, instance: str | None = None, **extensions: Any) -> dict[str, Any]:
    """The problem object (``None`` extensions left out)."""
    body: dict[str, Any] = {"type": "about:blank", "title": title(status), "status": status, "detail": detail}
    if instance is not None:
        body["instance"] = instance
    body.update({k: v for k, v in extensions.items() if v is not None})
    return body


def problem(status: int, detail: str, headers: dict[str, str] | None = None, instance: str | None = None,
            **extensions: Any) -> JSONResponse:
    """A problem-details answer (see the module docstring)."""
    return JSONResponse(status_code=status, content=problem_body(status, detail, instance, **extensions),
                        headers=headers, media_type=MEDIA_TYPE)


def problem_bytes(status: int, detail: str, instance: str | None = None) -> bytes:
    """The body of a problem answer sent by raw ASGI middleware (the Door)."""
    return json.dumps(problem_body(status, detail, instance)).encode()


def field_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI validation errors -> :class:`FieldError` dicts."""
    return [{"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))} for e in errors]


def summarize(errors: list[dict[str, Any]], shown: int = 5) -> str:
    """``invalid input: body.edits: <msg>; query.limit: <msg>`` (the first ``shown``, then how many more)."""
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:shown]]
    more = f" (and {len(errors) - shown} more)" if len(errors) > shown else ""
    return "invalid input: " + "; ".join(parts) + more


# ------------------------------------------------------------------------------------------ the document
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
RETRY_AFTER = {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}
RATE_HEADERS = {name: {"description": desc, "schema": {"type": "integer"}} for name, desc in (
    ("RateLimit-Limit", "requests allowed in the current window"),
    ("RateLimit-Remaining", "requests left in the current window"),
    ("RateLimit-Reset", "seconds until the window resets"))}

DESCRIPTIONS = {
    400: "a body that could not be read, or a malformed Range header",
    401: "missing or invalid API key (WWW-Authenticate: Bearer)",
    403: "the key may not do this",
    404: "no such resource for this tenant (any id or name in the path)",
    405: "the resource does not support this method (Allow lists those it does)",
    408: "the request body did not arrive in time",
    409: "the resource is in the wrong state for this (the detail says which, and what to do)",
    413: "request body too large",
    415: "the body is not JSON",
    422: "invalid input: `errors` names every offending field and `detail` summarizes them",
    429: "rate limit (per API key, per client address, or per address for failed keys; ERASEPRO_RATE_LIMIT*), "
         "the tenant's active-job limit (`limit`), or its storage quota (ERASEPRO_TENANT_STORAGE: `quota` and "
         "`used`, in bytes)",
    503: "a backing store (Redis, the artifact storage, the model registry) is unavailable, or the listing index "
         "is being rebuilt",
}
HEADERS = {405: {"Allow": {"description": "the methods of this resource", "schema": {"type": "string"}}},
           401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
           429: {"Retry-After": RETRY_AFTER, **RATE_HEADERS}, 503: {"Retry-After": RETRY_AFTER}}


def problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    """The OpenAPI response object of one error status."""
    out: dict[str, Any] = {"description": description or DESCRIPTIONS.get(status, title(status)),
                           "content": {MEDIA_TYPE: {"schema": PROBLEM_REF}}}
    if status in HEADERS:
        out["headers"] = HEADERS[status]
    return out


def error_statuses(path: str, op: dict[str, Any]) -> list[int]:
    """The error statuses an operation can answer: every ``/v1`` one 401/405/429/503; with a path parameter
    404; with parameters 422; with a body 400/408/413/415/422."""
    if not path.startswith("/v1"):
        return [405]
    statuses = [401, 405, 429, 503]
    params = op.get("parameters") or []
    if any(p.get("in") == "path" for p in params):
        statuses.append(404)
    if params:
        statuses.append(422)
    if "requestBody" in op:
        statuses += [400, 408, 413, 415, 422]
    return sorted(set(statuses))


def document_errors(doc: dict[str, Any]) -> None:
    """Give every operation of ``doc`` its error answers as problem details (a route's own description of a
    status is kept), and the :class:`Problem` schema; FastAPI's own 422 schemas go."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update({name: schema for name, schema in _problem_schemas().items()})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            for status in error_statuses(path, op):
                responses.setdefault(str(status), {})
            for code, resp in list(responses.items()):
                if code.isdigit() and int(code) >= 400:
                    given = resp.get("description")
                    keep = given if given and given not in ("Validation Error", "Successful Response") else None
                    responses[code] = problem_response(int(code), keep)


def _problem_schemas() -> dict[str, Any]:
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"Problem": schema, **defs}
