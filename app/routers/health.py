"""Liveness and readiness: ``/healthz`` (the process answers) and ``/readyz`` (Redis and a worker are up)."""

from __future__ import annotations

import redis.exceptions
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.deps import Svc
from app.problems import problem


class Readiness(BaseModel):
    ready: bool
    redis: str
    workers: int

router = APIRouter(tags=["health"])


@router.get("/healthz", tags=["health"], summary="The API process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}

@router.get("/readyz", tags=["health"], summary="Redis answers and at least one worker is alive",
            response_model=Readiness,
            responses={503: {"description": "not ready: problem details with `ready`, `redis` and `workers`"}})
async def readyz(svc: Svc) -> JSONResponse:
    try:
        workers = await svc.workers_alive()
    except redis.exceptions.RedisError as exc:
        return problem(503, "not ready: Redis does not answer", {"Retry-After": "5"}, "/readyz", ready=False,
                       redis=f"error: {exc}", workers=0)
    if workers == 0:
        return problem(503, "not ready: no worker is alive", {"Retry-After": "5"}, "/readyz", ready=False,
                       redis="ok", workers=0)
    return JSONResponse(content={"ready": True, "redis": "ok", "workers": workers})
