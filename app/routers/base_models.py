"""``/v1/base-models``: the registry of base models this server can edit."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import Svc, Tenant
from app.schemas import BaseModelList

router = APIRouter(tags=["base models"])


@router.get("/v1/base-models", tags=["base models"], response_model=BaseModelList)
async def list_base_models(tenant: Tenant, svc: Svc) -> dict:
    return {"items": [m.public() for m in svc.registry.models().values()]}
