"""Rate limits at the door, shared by every API process through Redis (fixed windows of ``rate_window_s``).

Three counters, each ``INCR`` + ``EXPIRE`` on ``erasepro:rl:{kind}:{who}:{window}``: per API key (the tenant),
per client address (every ``/v1`` request), and per client address for requests without a valid key (a
key-guessing flood meets this lower limit first; the key is not even checked once it is spent). Past a limit:
``429`` with ``Retry-After`` (seconds to the window's end) and the IETF draft's ``RateLimit-Limit``,
``RateLimit-Remaining`` and ``RateLimit-Reset`` headers, which every ``/v1`` answer carries. If Redis is down
the limits are not applied (the request goes on, and most answers are 503 then anyway).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis.asyncio as aredis
import redis.exceptions

from erasepro_jobs.settings import REDIS_PREFIX, Settings

log = logging.getLogger("erasepro.api")


@dataclass(frozen=True)
class Verdict:
    """One counter's state after this request: its limit, what remains, seconds to its reset."""

    limit: int
    remaining: int
    reset_s: int

    @property
    def exceeded(self) -> bool:
        return self.remaining < 0

    def headers(self) -> dict[str, str]:
        out = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(max(0, self.remaining)),
               "RateLimit-Reset": str(self.reset_s)}
        if self.exceeded:
            out["Retry-After"] = str(max(1, self.reset_s))
        return out


class RateLimiter:
    """The counters (see the module docstring)."""

    def __init__(self, r: aredis.Redis, settings: Settings) -> None:
        self.r = r
        self.window = settings.rate_window_s
        self.limits = {"key": settings.rate_limit, "addr": settings.rate_limit_address,
                       "anon": settings.rate_limit_unauthenticated}

    async def hit(self, checks: list[tuple[str, str]]) -> Verdict | None:
        """Count this request on each ``(kind, who)`` whose limit is on; the tightest verdict (``None``: no
        limit applies, or Redis is unavailable)."""
        checks = [(kind, who) for kind, who in checks if self.limits.get(kind)]
        if not checks:
            return None
        now = time.time()
        window = int(now // self.window)
        reset = int((window + 1) * self.window - now) + 1
        try:
            async with self.r.pipeline(transaction=False) as p:
                for kind, who in checks:
                    key = f"{REDIS_PREFIX}rl:{kind}:{who}:{window}"
                    p.incr(key)
                    p.expire(key, self.window + 1)
                counts = (await p.execute())[::2]
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("rate limits not applied (Redis): %s", exc)
            return None
        verdicts = [Verdict(self.limits[kind], self.limits[kind] - int(n), reset)
                    for (kind, _), n in zip(checks, counts, strict=True)]
        return min(verdicts, key=lambda v: v.remaining)

    async def spent(self, kind: str, who: str) -> Verdict | None:
        """The counter's verdict without counting (``None``: under its limit, off, or Redis unavailable)."""
        limit = self.limits.get(kind)
        if not limit:
            return None
        now = time.time()
        window = int(now // self.window)
        try:
            n = int(await self.r.get(f"{REDIS_PREFIX}rl:{kind}:{who}:{window}") or 0)
        except (redis.exceptions.RedisError, OSError):
            return None
        if n < limit:
            return None
        return Verdict(limit, -1, int((window + 1) * self.window - now) + 1)
