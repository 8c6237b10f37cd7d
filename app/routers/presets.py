"""``/v1/presets``: the moderation presets a ``POST /v1/erasures`` can name (``preset`` + ``preset_params``)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import Tenant
from app.schemas import PresetList
from erasepro_core.presets import PRESETS

router = APIRouter(tags=["presets"])


@router.get("/v1/presets", tags=["presets"], response_model=PresetList)
async def list_presets(tenant: Tenant) -> dict:
    """Each preset with its version, what it targets and preserves, its parameters, edits (or the pattern that
    makes one edit per name), templates, preserve set, the prompts an evaluation draws, and its judge."""
    return {"items": [p.describe() for p in PRESETS.values()]}
