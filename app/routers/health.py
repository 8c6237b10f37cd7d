"""Liveness and readiness: ``/healthz`` (the process answers) and ``/readyz`` (Redis and a worker are up)."""

from __future__ import annotations

import redis.exceptions
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import Svc

router = APIRouter(tags=["health"])


@router.get("/healthz", tags=["health"], summary="The API process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}

@router.get("/readyz", tags=["health"], summary="Redis answers and at least one worker is alive",
         responses={503: {"description": "not ready"}})
async def readyz(svc: Svc) -> JSONResponse:
    try:
        workers = await svc.workers_alive()
    except redis.exceptions.RedisError as exc:
        return JSONResponse(status_code=503, content={"ready": False, "redis": f"error: {exc}", "workers": 0})
    ok = workers > 0
    return JSONResponse(status_code=200 if ok else 503,
                        content={"ready": ok, "redis": "ok", "workers": workers})
