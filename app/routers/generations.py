"""Generation: images from an erasure's edited model or from an unedited base model, and polling them."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from app.bounds import check_generation
from app.deps import Cfg, JobId, Svc, Tenant, not_found, require_model
from app.problems import problem
from app.schemas import GeneratedImages, GenerateRequest, GenerationView, omittable
from app.service import Service, generation_view
from erasepro_jobs import store
from erasepro_jobs.settings import Settings

router = APIRouter(tags=["generation"])

WaitS = Annotated[omittable(float, ge=0, le=3600, allow_inf_nan=False),
                  Query(description="Seconds to wait before answering 202 (capped by the server's "
                                                  "limit; 0 answers 202 at once).")]


async def _generate(svc: Service, settings: Settings, tenant: str, base_model: str, erasure_id: str | None,
                    body: GenerateRequest, wait: float | None, accept: str) -> Response:
    job_id = await svc.submit_generation(tenant=tenant, base_model=base_model, erasure_id=erasure_id,
                                         params=body.model_dump(mode="json"))
    limit = settings.generate_wait_s
    await svc.wait_done(job_id, limit if wait is None else min(wait, limit))
    return await _generation_result(svc, tenant, job_id, accept, pending_status=202)

async def _generation_result(svc: Service, tenant: str, job_id: str, accept: str,
                             pending_status: int) -> Response:
    rec = await svc.record(job_id, tenant, "generation")
    if rec is None:
        raise not_found("generation")
    view = generation_view(rec)
    status = rec.get("status")
    if status in store.ACTIVE:
        return JSONResponse(status_code=pending_status, content=view,
                            headers={"Location": f"/v1/generations/{job_id}", "Retry-After": "1"})
    guard = view.get("guard") or {}
    if status == "failed" and guard.get("flagged") and guard.get("mode") == "refuse":
        # the erasure's prompt guard refused the prompt: the caller's input, not a server fault
        return problem(422, rec.get("error") or "refused by the prompt guard", None,
                       f"/v1/generations/{job_id}", guard=guard, job=view)
    if status != "succeeded":
        erasure_id = rec.get("erasure_id")
        if erasure_id and await svc.erasure(tenant, erasure_id) is None:
            return problem(404, f"the erasure {erasure_id} this generation used has been deleted", None,
                           f"/v1/generations/{job_id}", job=view)
        return problem(409, f"generation {status}: {rec.get('error') or 'no images'}", None,
                       f"/v1/generations/{job_id}", job=view)
    images = await svc.images(job_id)
    if not images:
        raise HTTPException(410, "the generated images have expired; generate again")
    params = json.loads(rec.get("params") or "{}")
    want_json = "application/json" in accept and "image/png" not in accept
    headers = {"X-Erasepro-Generation": job_id, "X-Erasepro-Seed": str(params.get("seed", 0))}
    if len(images) == 1 and not want_json:
        return Response(content=base64.b64decode(images[0]), media_type="image/png", headers=headers)
    return JSONResponse(headers=headers, content={
        "id": job_id, "images": images, "media_type": "image/png", "seed": params.get("seed", 0),
        "timings": view["timings"]})

gen_responses: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}, "application/json": {"schema": GeneratedImages.model_json_schema()}},
          "description": "one image as PNG, or several as base64 PNGs in JSON"},
    202: {"model": GenerationView, "description": "still running after the wait limit: poll the job"},
    404: {"description": "not found"}, 410: {"description": "the generated images have expired"},
    409: {"description": "the base model is not installed here, or the generation failed or was cancelled "
                         "(the body's `job` says which)"},
    422: {"description": "invalid parameters, or the prompt was refused by the erasure's prompt guard (its "
                         "`prompt_guard` option is 'refuse'): the body's `guard` says why"},
}

@router.post("/v1/erasures/{job_id}/generate", tags=["generation"], response_model=None,
          responses={**gen_responses, 409: {"description": "the erasure has not succeeded, or its base model is not "
                                                           "installed here"}})
async def generate_edited(job_id: JobId, body: GenerateRequest, tenant: Tenant, svc: Svc, settings: Cfg,
                          request: Request, wait: WaitS = None) -> Response:
    """Sample from the base model with this erasure's delta applied."""
    view = await svc.erasure(tenant, job_id)
    if view is None:
        raise not_found()
    if view["status"] != "succeeded":
        raise HTTPException(409, f"erasure {job_id} is {view['status']}; generation needs a succeeded erasure")
    check_generation(body, require_model(svc, view["base_model"], ("path", "job_id")), svc.settings.job_memory)
    return await _generate(svc, settings, tenant, view["base_model"], job_id, body, wait,
                           request.headers.get("accept", ""))

@router.post("/v1/base-models/{name}/generate", tags=["generation"], response_model=None, responses=gen_responses)
async def generate_base(name: Annotated[str, Path(max_length=64)], body: GenerateRequest, tenant: Tenant,
                        svc: Svc, settings: Cfg, request: Request, wait: WaitS = None) -> Response:
    """Sample from an unedited registered base model (to compare with an erasure)."""
    check_generation(body, require_model(svc, name, ("path", "name")), svc.settings.job_memory)
    return await _generate(svc, settings, tenant, name, None, body, wait, request.headers.get("accept", ""))

@router.get("/v1/generations/{job_id}", tags=["generation"], response_model=GenerationView)
async def get_generation(job_id: JobId, tenant: Tenant, svc: Svc) -> dict:
    rec = await svc.record(job_id, tenant, "generation")
    if rec is None:
        raise not_found("generation")
    return generation_view(rec)

@router.post("/v1/generations/{job_id}/cancel", tags=["generation"], status_code=202,
             response_model=GenerationView,
             responses={202: {"description": "cancelled (queued), or cancellation requested (running)"},
                        404: {"description": "no such generation for this tenant"},
                        409: {"description": "the generation has finished: nothing to cancel"}})
async def cancel_generation(job_id: JobId, tenant: Tenant, svc: Svc) -> dict:
    """Cancel a queued or running generation; then ``DELETE`` removes it."""
    rec = await svc.record(job_id, tenant, "generation")
    if rec is None:
        raise not_found("generation")
    if rec.get("status") not in store.ACTIVE:
        raise HTTPException(409, f"generation {job_id} is {rec.get('status')}: only a queued or running one can "
                                 "be cancelled")
    await svc.cancel(tenant, job_id)
    return generation_view(await svc.record(job_id, tenant, "generation") or rec)

@router.delete("/v1/generations/{job_id}", tags=["generation"], status_code=204, response_class=Response,
               responses={204: {"description": "deleted with its images; now 404"},
                          404: {"description": "no such generation for this tenant"},
                          409: {"description": "the generation is queued or running: cancel it first "
                                               "(POST /v1/generations/{job_id}/cancel)"}})
async def delete_generation(job_id: JobId, tenant: Tenant, svc: Svc) -> Response:
    """Delete a finished generation and its images; afterwards it is 404."""
    rec = await svc.record(job_id, tenant, "generation")
    if rec is None:
        raise not_found("generation")
    if rec.get("status") in store.ACTIVE:
        raise HTTPException(409, f"generation {job_id} is {rec.get('status')}: cancel it first (POST "
                                 f"/v1/generations/{job_id}/cancel), then delete it once it has stopped")
    await svc.delete_generation(job_id)
    return Response(status_code=204)

@router.get("/v1/generations/{job_id}/images", tags=["generation"], response_model=None, responses=gen_responses)
async def generation_images(job_id: JobId, tenant: Tenant, svc: Svc, request: Request) -> Response:
    """The images of a finished generation (202 with the job while it runs)."""
    return await _generation_result(svc, tenant, job_id, request.headers.get("accept", ""), pending_status=202)
