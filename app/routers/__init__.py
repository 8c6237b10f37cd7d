"""The API's routes, one router per resource (the table is in :mod:`app.main`'s docstring)."""

from __future__ import annotations

from fastapi import APIRouter

from app.routers import (
    audit,
    base_models,
    erasures,
    evaluations,
    events,
    generations,
    health,
    presets,
    usage,
    webhook_endpoints,
)

ROUTERS: tuple[APIRouter, ...] = (health.router, base_models.router, erasures.router, events.router,
                                  evaluations.router, generations.router, presets.router,
                                  webhook_endpoints.router, usage.router, audit.router)
