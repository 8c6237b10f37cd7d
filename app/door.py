"""The ``Door`` middleware: authentication and body limits, checked before any handler (and before the body is
read, so an unauthenticated client cannot make the server buffer or parse anything)."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import Identity
from app.contract import routed
from app.limits import RateLimiter, Verdict
from app.problems import MEDIA_TYPE, problem_bytes
from app.service import Service
from erasepro_jobs.settings import Settings


def _problem_response(status: int, detail: str, headers: dict[str, str] | None = None,
                      instance: str | None = None) -> tuple[dict, bytes]:
    payload = problem_bytes(status, detail, instance)
    hdrs = [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(payload)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http.response.start", "status": status, "headers": hdrs}, payload


class Door:
    """Everything checked before a handler runs, in this order, with problem details (:mod:`app.problems`):

    1. ``/v1``: the rate limits (429, see :mod:`app.limits`) and the API key (401) — before the body is read, so
       no key + bad JSON is 401, not 422;
    2. bodies (POST/PUT/PATCH): ``Content-Type`` JSON (415; an empty body may have none), size (413, chunked
       included), and the whole body within ``body_timeout_s`` (408: a slow-body client does not hold a
       connection for ever). A method no route serves at the path skips these: the router answers its 404 or
       405 (with ``Allow``).

    The tenant is left in ``scope["state"]["tenant"]`` for the handlers.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, body_timeout_s: float, settings: Settings | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s
        self.settings = settings
        self._limiter: RateLimiter | None = None

    def limiter(self, scope: Scope) -> RateLimiter | None:
        if self.settings is None:
            return None
        if self._limiter is None:
            svc: Service = scope["app"].state.service
            self._limiter = RateLimiter(svc.r, self.settings)
        return self._limiter

    @staticmethod
    def _with_headers(send: Send, extra: dict[str, str]) -> Send:
        encoded = [(k.lower().encode(), v.encode()) for k, v in extra.items()]

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *encoded]}
            await send(message)

        return wrapped

    async def _limited(self, send: Send, verdict: Verdict, what: str) -> None:
        await self._reply(send, 429, f"rate limit exceeded: {verdict.limit} requests per "
                                     f"{self.settings.rate_window_s if self.settings else '?'} s {what}; retry "
                                     f"after {max(1, verdict.reset_s)} s", verdict.headers())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["path"].startswith("/v1/") or scope["path"] == "/v1":
            limiter = self.limiter(scope)
            addr = (scope.get("client") or ("unknown", 0))[0]
            if limiter is not None:
                spent = await limiter.spent("anon", addr)
                if spent is not None:  # this address spent its failed-key budget: no more keys are tried
                    await self._limited(send, spent, "without a valid API key from this address")
                    return
            who = self._authenticate(scope, headers.get(b"authorization", b""))
            if who is None:
                verdict = await limiter.hit([("anon", addr)]) if limiter is not None else None
                if verdict is not None and verdict.exceeded:
                    await self._limited(send, verdict, "without a valid API key from this address")
                    return
                await self._reply(send, 401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                                  {"WWW-Authenticate": "Bearer", **(verdict.headers() if verdict else {})})
                return
            state = scope.setdefault("state", {})
            state["key_id"] = who.key_id  # the audit log's and the logs' name for the key
            if who.tenant is not None:
                state["tenant"] = who.tenant
            else:  # an admin key: no tenant, so every tenant route answers 401 (app.deps.tenant_of)
                state["admin"] = who.admin
            bucket = who.tenant if who.tenant is not None else who.key_id
            verdict = await limiter.hit([("key", bucket), ("addr", addr)]) if limiter is not None else None
            if verdict is not None:
                if verdict.exceeded:
                    await self._limited(send, verdict, "for this API key or address")
                    return
                send = self._with_headers(send, verdict.headers())
        if scope["method"] not in ("POST", "PUT", "PATCH") or not routed(scope["app"], scope):
            await self.app(scope, receive, send)
            return
        ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        # a POST without a body (Content-Length: 0, no type) is an action, e.g. rotate-secret: nothing to type
        bodiless = not ctype and headers.get(b"content-length") == b"0"
        if (ctype != "application/json" and not (ctype.startswith("application/") and ctype.endswith("+json"))
                and not bodiless):
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

    def _authenticate(self, scope: Scope, header: bytes) -> Identity | None:
        scheme, _, key = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer":
            return None
        svc: Service = scope["app"].state.service
        return svc.keys.identify(key.strip())

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
        start, payload = _problem_response(status, detail, headers)
        await send(start)
        await send({"type": "http.response.body", "body": payload})
