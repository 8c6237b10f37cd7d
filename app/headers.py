"""Security headers on every answer (ASGI middleware, outermost).

Everywhere: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` (with CSP ``frame-ancestors 'none'``)
and ``Referrer-Policy: no-referrer``. API answers (``/v1``, ``/healthz``, ``/readyz``, ``/openapi.json``) are data,
never a page: ``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'``. The console and
``/docs`` are pages with scripts: the console gets ``frame-ancestors 'none'``, ``/docs`` (served from local files,
:mod:`app.docs`) a policy that loads nothing from another host (:data:`app.docs.DOCS_CSP`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.docs import DOCS_CSP, DOCS_PATH

COMMON = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
          (b"referrer-policy", b"no-referrer")]
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
PAGE_CSP = b"frame-ancestors 'none'"
API_PREFIXES = ("/v1", "/healthz", "/readyz", "/openapi.json")


class SecurityHeaders:
    """Adds the headers above to ``http.response.start`` (a header the route set itself is kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        csp = (API_CSP if path.startswith(API_PREFIXES) else
               DOCS_CSP if path == DOCS_PATH or path.startswith(DOCS_PATH + "/") else PAGE_CSP)
        extra = [*COMMON, (b"content-security-policy", csp)]

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in extra if k not in have]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, wrapped)
