"""Slow-client guard for uvicorn: a request's headers must arrive within ``ERASEPRO_HEADER_TIMEOUT_S``.

uvicorn's h11 protocol has a keep-alive timer but no limit on how long a client may take to send its request
headers, and any byte it sends cancels the keep-alive timer: a client dribbling a byte every few seconds holds
a connection (and its buffers) for ever. This protocol arms one *absolute* deadline when a connection opens and
again after each response; it is cancelled only when a complete request head has arrived. Bodies are bounded by
the API's own middleware (``ERASEPRO_BODY_TIMEOUT_S``, answered 408).

Use: ``uvicorn app.main:app --http app.http_guard:GuardedH11Protocol`` (``erasepro serve`` does it for you).
"""

from __future__ import annotations

import asyncio
import functools

from uvicorn.protocols.http.h11_impl import H11Protocol

from erasepro_jobs.settings import Settings

PROTOCOL = "app.http_guard:GuardedH11Protocol"


@functools.lru_cache(maxsize=1)
def header_timeout_s() -> float:
    return Settings.from_env().header_timeout_s


class GuardedH11Protocol(H11Protocol):
    """:class:`H11Protocol` with a deadline on each request head (see the module docstring)."""

    _head_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(header_timeout_s(), self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()  # the client never finished its request head: drop it without a reply

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a complete request head arrived and its cycle started
            self._disarm()

    def on_response_complete(self) -> None:
        self._arm()  # before super(): a pipelined request it starts disarms the timer again
        super().on_response_complete()
