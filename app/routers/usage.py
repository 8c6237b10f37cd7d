"""``/v1/usage``: what the calling tenant stores and runs, against its limits."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import Svc, Tenant
from app.schemas import UsageView

router = APIRouter(tags=["usage"])


@router.get("/v1/usage", tags=["usage"], response_model=UsageView)
async def get_usage(tenant: Tenant, svc: Svc) -> dict:
    """Bytes stored in the artifact store by kind (checkpoints, exports, images, other) against the storage quota
    (``ERASEPRO_TENANT_STORAGE``), queued + running jobs by kind against the active-job limit, and the retention
    TTLs of exports and images (docs/service.md, "Quotas and retention")."""
    return await svc.usage(tenant)
