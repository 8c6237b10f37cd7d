"""The ``Observe`` middleware: one place that sees every request's outcome, for the three records kept of it.

For each HTTP request it assigns a request id (the client's ``X-Request-ID`` when it is 1-64 of
``A-Z a-z 0-9 . _ -``, else a new one; echoed in the response's ``X-Request-ID``), times it to the last body
byte, and then:

* counts it in the Prometheus HTTP series by route *template* (``/v1/erasures/{job_id}``, never an id: the
  label set stays small) and status (:mod:`app.metrics`);
* appends an audit line for state-changing and download requests (:data:`AUDITED`; :mod:`erasepro_jobs.audit`);
* logs one access line with the request id, route, status, tenant and key id (JSON with
  ``ERASEPRO_LOG_FORMAT=json``).

It sits outside the ``Door``, so refused requests (401, 429, 413) are counted and audited too; what the Door
learnt about the caller (tenant, key id) is read back from ``scope["state"]``.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import observe_http
from erasepro_jobs import logs

log = logging.getLogger("erasepro.access")

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# (method, route template) -> (action, resource type, path parameter naming the resource; None: the created one,
# read from the response's Location header)
AUDITED: dict[tuple[str, str], tuple[str, str, str | None]] = {
    ("POST", "/v1/erasures"): ("erasure.create", "erasure", None),
    ("DELETE", "/v1/erasures/{job_id}"): ("erasure.delete", "erasure", "job_id"),
    ("GET", "/v1/erasures/{job_id}/checkpoint"): ("checkpoint.download", "erasure", "job_id"),
    ("POST", "/v1/erasures/{job_id}/evaluations"): ("evaluation.create", "erasure", "job_id"),
    ("DELETE", "/v1/erasures/{job_id}/evaluations/{eval_id}"): ("evaluation.delete", "evaluation", "eval_id"),
    ("POST", "/v1/erasures/{job_id}/generate"): ("generation.create", "erasure", "job_id"),
    ("POST", "/v1/base-models/{name}/generate"): ("generation.create", "base_model", "name"),
    ("DELETE", "/v1/generations/{job_id}"): ("generation.delete", "generation", "job_id"),
    ("GET", "/v1/generations/{job_id}/images"): ("generation.download", "generation", "job_id"),
    ("POST", "/v1/webhook-endpoints"): ("webhook_endpoint.create", "webhook_endpoint", None),
    ("PATCH", "/v1/webhook-endpoints/{endpoint_id}"): ("webhook_endpoint.update", "webhook_endpoint",
                                                       "endpoint_id"),
    ("DELETE", "/v1/webhook-endpoints/{endpoint_id}"): ("webhook_endpoint.delete", "webhook_endpoint",
                                                        "endpoint_id"),
    ("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret"): ("webhook_endpoint.rotate_secret",
                                                                    "webhook_endpoint", "endpoint_id"),
    ("GET", "/v1/audit"): ("audit.read", "audit", None),
}
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")


def route_template(scope: Scope) -> str:
    """The matched route's path template; for a request the Door answered before routing, the route it would
    have matched; ``unmatched`` for none (so unknown paths cannot grow the label set)."""
    route = scope.get("route")
    if route is None:
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            match, _ = candidate.matches({**scope, "method": scope.get("method", "GET")})
            if match != Match.NONE:
                route = candidate
                break
    return getattr(route, "path", None) or "unmatched"


def _path_params(scope: Scope, route: str) -> dict[str, Any]:
    params = scope.get("path_params")
    if params:
        return params
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        if getattr(candidate, "path", None) == route:
            match, child = candidate.matches(scope)
            if match != Match.NONE:
                return child.get("path_params", {})
    return {}


def _safe_id(value: Any) -> str:
    text = str(value or "")
    return text if _ID_RE.match(text) else ("" if not text else "invalid")


class Observe:
    """See the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def json_logs(scope: Scope) -> bool:
        settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
        return getattr(settings, "log_format", "text") == "json"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID_RE.match(given) else secrets.token_hex(12)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = logs.request_id.set(request_id)  # every log line of this request names it
        started = time.perf_counter()
        status = 500
        location = ""

        async def wrapped(message: Message) -> None:
            nonlocal status, location
            if message["type"] == "http.response.start":
                status = int(message["status"])
                hdrs = list(message.get("headers", []))
                location = next((v.decode("latin-1") for k, v in hdrs if k.lower() == b"location"), "")
                message = {**message, "headers": [*hdrs, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            self._done(scope, status, time.perf_counter() - started, request_id, location)
            logs.request_id.reset(token)

    def _done(self, scope: Scope, status: int, seconds: float, request_id: str, location: str) -> None:
        try:
            method = scope.get("method", "GET")
            route = route_template(scope)
            observe_http(method, route, status, seconds)
            state = scope.get("state") or {}
            tenant, key_id = state.get("tenant"), state.get("key_id")
            # an access line of our own in JSON mode (uvicorn's has no request id or tenant); DEBUG in text mode
            level = logging.INFO if self.json_logs(scope) else logging.DEBUG
            log.log(level, "%s %s %d %.1f ms", method, route, status, seconds * 1e3, extra={
                "request_id": request_id, "route": route, "status": status, "tenant": tenant, "key_id": key_id,
                "duration_ms": round(seconds * 1e3, 2)})
            audit = getattr(scope["app"].state, "audit", None) if "app" in scope else None
            if audit is not None:
                self._audit(audit, scope, method, route, status, request_id, location, tenant, key_id)
        except Exception:  # bookkeeping never turns an answered request into an error
            log.exception("recording the request %s", request_id)

    @staticmethod
    def _audit(audit: Any, scope: Scope, method: str, route: str, status: int, request_id: str, location: str,
               tenant: str | None, key_id: str | None) -> None:
        spec = AUDITED.get((method, route))
        if spec is None:
            if method not in STATE_CHANGING or not scope.get("path", "").startswith("/v1/"):
                return
            spec = (f"{method.lower()} {route}", "", None)
        action, kind, param = spec
        if param is not None:
            ident = _safe_id(_path_params(scope, route).get(param))
        else:
            ident = _safe_id(location.rstrip("/").rsplit("/", 1)[-1].split("?")[0]) if location else ""
        resource = f"{kind}/{ident}" if kind and ident else kind
        audit.record(tenant=tenant, key_id=key_id or None, action=action, resource=resource, result=status,
                     request_id=request_id, method=method, route=route,
                     address=(scope.get("client") or ("", 0))[0] or None)
