"""``/v1/erasures/{id}/evaluations``: attack a finished erasure on a worker and read the numbers back.

``POST`` starts an evaluation job (attacks, each at a budget in the range its registration in
:data:`erasepro_core.attacks.ATTACKS` gives, a seed, the erasure's targets or some of them, a time bound) and
answers 202 with its id; ``GET`` lists the erasure's evaluations (finished ones from its manifest, newest last,
then queued/running/failed ones from Redis) or shows one. Tenant-scoped: another tenant's erasure is a 404.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from starlette.concurrency import run_in_threadpool

from app.bounds import check_memory
from app.deps import JobId, Svc, Tenant, not_found
from app.schemas import json_int
from erasepro_core.attacks import MAX_TARGETS
from erasepro_core.attacks import budgets as attack_budgets
from erasepro_core.judges import IMAGE_JUDGES, JUDGES, judge_for
from erasepro_core.judges import judge_problem as image_judge_problem
from erasepro_core.judges.evaluate import MAX_PROMPTS, MAX_SAMPLES, eval_items
from erasepro_core.robust.names import T1_CATEGORIES, T2_ATTACKS, THREAT_MODELS
from erasepro_jobs import memory, store
from erasepro_jobs.evaluations import (
    IMAGE_NAME_RE,
    MAX_PER_CATEGORY,
    T2_BUDGETS,
    THREAT_MODEL_BASES,
    evaluation_view,
    image_key,
    judge_problem,
    threat_problem,
)
from erasepro_jobs.registry import ModelUnavailable

router = APIRouter(tags=["evaluations"])

MAX_TIMEOUT_S = 6 * 3600
MAX_LISTED = 100  # live (unfinished or failed) evaluations listed per erasure, newest


class EvaluationRequest(BaseModel):
    """Which attacks at which budget, with which seed, on which of the erasure's targets, within how long."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"judge": "clip", "samples": 2, "max_prompts": 4, "seed": 0, "steps": 20, "timeout_s": 1800}]})
    budgets: Annotated[dict[str, json_int()] | None, Field(min_length=1, max_length=len(attack_budgets()), description=(
        "attack -> budget (the shapes judge only: the bundled model's attacks); attacks and ranges: "
        f"{attack_budgets()}")),
        WithJsonSchema({"anyOf": [{"type": "object", "minProperties": 1, "maxProperties": len(attack_budgets()),
                                   "additionalProperties": False,
                                   "properties": {name: {"type": "integer", "minimum": lo, "maximum": hi}
                                                  for name, (lo, hi) in attack_budgets().items()}},
                                  {"type": "null"}]})] = None
    judge: Annotated[Literal[tuple(JUDGES)] | None, Field(description=(  # type: ignore[valid-type]
        "Who reads the images: 'shapes' (the bundled model: attacks at budgets), 'nudenet' or 'clip' (before/after "
        "images of the preset's prompts, or of each target's plain phrasings). Left out: the erasure's preset's "
        "judge (nudity: nudenet; artists, characters, brands: clip), the world's own on bundled, else clip. "
        "CLIP reads the server's ERASEPRO_CLIP_MODEL folder."))] = None
    samples: Annotated[json_int(ge=1, le=MAX_SAMPLES), Field(
                                      description="images per prompt and side (image judges)")] = 2
    max_prompts: Annotated[json_int(ge=1, le=MAX_PROMPTS), Field(description="prompts drawn, the first of the "
                                      "preset's list (image judges)")] = 12
    seed: json_int(ge=0, le=2**31 - 1) = 0
    targets: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]] | None,
                       Field(min_length=1, max_length=MAX_TARGETS,
                             description="some of the erasure's targets (default: all of them)")] = None
    steps: Annotated[json_int(ge=2, le=50), Field(description="denoising steps per image the attacks draw")] = 25
    timeout_s: Annotated[json_int(ge=10, le=MAX_TIMEOUT_S), Field(description="the job's time bound")] = 1800
    threat_models: Annotated[list[Literal[THREAT_MODELS]] | None, Field(  # type: ignore[valid-type]
        min_length=1, max_length=len(THREAT_MODELS), json_schema_extra={"uniqueItems": True}, description=(
            "The threat-model evaluation (docs/method.md, 'Threat models'; erasures of a base model in "
            f"{list(THREAT_MODEL_BASES)}, its own judge): 'T1' = attack prompts typed at the generation endpoint, per "
            "category; 'T2' = embedding attacks on the checkpoint (budgets: some of "
            f"{list(T2_ATTACKS)}, default {T2_BUDGETS}). Each row: rate, k, n, 95 % Wilson interval. Left out on "
            "canvas (and no budgets): both."))] = None
    per_category: Annotated[json_int(ge=1, le=MAX_PER_CATEGORY), Field(description=(
        "threat models only: attack prompts per T1 category and target (T2: ≈ instances per attack and target)"))
    ] = 16
    categories: Annotated[list[Literal[T1_CATEGORIES]] | None, Field(  # type: ignore[valid-type]
        min_length=1, max_length=len(T1_CATEGORIES), json_schema_extra={"uniqueItems": True},
        description="threat models only: the T1 categories to run (default: all)")] = None
    compare_unedited: Annotated[bool, Field(description=(
        "threat models only: also draw the T1 prompts from the unedited model (same prompts and seeds), for the "
        "paired difference"))] = True

    @field_validator("threat_models", "categories")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"each at most once, got {v}")
        return v

    @field_validator("budgets")
    @classmethod
    def _in_range(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        ranges = attack_budgets()  # the attack registry's, read now: an attack registered after import counts
        for name, budget in (v or {}).items():
            if name not in ranges:
                raise ValueError(f"unknown attack {name!r}; attacks are {sorted(ranges)}")
            lo, hi = ranges[name]
            if not lo <= budget <= hi:
                raise ValueError(f"{name}: budget must be in {lo}..{hi}, got {budget}")
        return v


def _invalid(loc: tuple[str, ...], msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg}])


THREAT_ONLY = ("per_category", "categories", "compare_unedited")
NOT_THREAT = ("samples", "max_prompts")


def _threat_request(body: EvaluationRequest, base_model: str, targets: list[str]) -> dict[str, Any] | None:
    """The threat-model evaluation's settings (``threat_models``, ``per_category``, ``categories``,
    ``compare_unedited`` and the T2 ``budgets``), or None when the request asks for another evaluation. Asked for
    by ``threat_models``, or by nothing on a base model in THREAT_MODEL_BASES (no budgets, no judge); a setting
    that does not apply is a 422 naming it."""
    given = body.model_fields_set
    wanted = body.threat_models is not None or (base_model in THREAT_MODEL_BASES and body.budgets is None
                                                  and body.judge in (None, "canvas"))
    if not wanted:
        for name in THREAT_ONLY:
            if name in given:
                raise _invalid(("body", name), f"{name} applies to the threat-model evaluation only "
                                               "(give threat_models)")
        return None
    if body.judge not in (None, "canvas"):
        raise _invalid(("body", "judge"), f"the threat-model evaluation reads the canvas judge, not {body.judge!r}")
    for name in NOT_THREAT:
        if name in given:
            raise _invalid(("body", name), f"{name} applies to image judges; the threat-model evaluation takes "
                                           "per_category")
    if base_model not in THREAT_MODEL_BASES:
        raise _invalid(("body", "threat_models"), threat_problem(base_model, targets) or "")
    problem = threat_problem(base_model, targets)
    if problem:
        raise _invalid(("body", "targets"), problem)
    models = list(body.threat_models or THREAT_MODELS)
    budgets = dict(body.budgets) if body.budgets is not None else {}
    if body.budgets is not None:
        stray = sorted(set(budgets) - set(T2_ATTACKS))
        if stray or "T2" not in models:
            raise _invalid(("body", "budgets"), (
                f"{stray} are not T2 attacks (the threat-model evaluation's budgets are some of {list(T2_ATTACKS)})"
                if stray else "budgets are the T2 attacks' budgets: add 'T2' to threat_models or leave budgets out"))
    elif "T2" in models:
        budgets = dict(T2_BUDGETS)
    if "categories" in given and "T1" not in models:
        raise _invalid(("body", "categories"), "categories are T1's: add 'T1' to threat_models")
    return {"threat_models": models, "per_category": body.per_category,
            "categories": list(body.categories or T1_CATEGORIES), "compare_unedited": body.compare_unedited,
            "budgets": budgets}


async def _erasure_or_404(svc: Svc, tenant: str, job_id: str) -> dict[str, Any]:
    view = await svc.erasure(tenant, job_id)
    if view is None:
        raise not_found()
    return view


@router.post("/v1/erasures/{job_id}/evaluations", status_code=202,
             responses={404: {"description": "no such erasure for this tenant"},
                        409: {"description": "the erasure has not succeeded"},
                        422: {"description": "bad attacks/budgets/targets, or the base model ships no judge"}})
async def create_evaluation(job_id: JobId, body: EvaluationRequest, tenant: Tenant, svc: Svc) -> JSONResponse:
    """Start an evaluation of this erasure (ASR per attack at its budget, efficacy per prompt set)."""
    view = await _erasure_or_404(svc, tenant, job_id)
    if view["status"] != "succeeded":
        raise HTTPException(409, f"erasure {job_id} is {view['status']}: only a succeeded erasure can be evaluated")
    erased = [e["target"] for e in (view.get("spec") or {}).get("edits", [])]
    if body.targets is None and len(erased) > MAX_TARGETS:
        raise _invalid(("body", "targets"), f"this erasure has {len(erased)} targets: name at most {MAX_TARGETS}")
    targets = body.targets or erased
    stray = [t for t in targets if t not in erased]
    if stray:
        raise _invalid(("body", "targets"), f"{stray} are not targets of this erasure (it erased {erased})")
    try:
        info = svc.registry.require(view["base_model"])
    except ModelUnavailable as exc:
        raise HTTPException(409, f"the erasure's base model is not available here: {exc}") from None
    spec = view.get("spec") or {}
    world = "bundled" if info.source == "bundled" else info.name
    threat = _threat_request(body, info.name, targets)
    # budgets without a judge ask for the attacks, as before image judges existed
    judge = body.judge or ("canvas" if threat else "shapes" if body.budgets is not None else
                           judge_for(world, (spec.get("preset") or {}).get("name")))
    fields: dict[str, Any] = {"judge": judge}
    if threat:
        problem = await run_in_threadpool(image_judge_problem, "canvas")
        if problem:
            raise _invalid(("body", "threat_models"), problem)
        fields["budgets"] = threat.pop("budgets")
    elif judge in IMAGE_JUDGES:
        if body.budgets is not None:
            raise _invalid(("body", "budgets"), f"attacks run with the shapes judge only; the {judge} judge draws "
                                                "before/after images (leave budgets out)")
        problem = await run_in_threadpool(image_judge_problem, judge)
        if problem:
            raise _invalid(("body", "judge"), problem)
        items = [i for i in eval_items(spec) if body.targets is None or i["target"] in body.targets]
        if not items:
            raise _invalid(("body", "targets"), f"the {judge} judge's prompts name none of {targets}")
        fields |= {"items": items[:body.max_prompts], "samples": body.samples}
    else:
        if body.budgets is None:
            raise _invalid(("body", "budgets"), f"the {judge} judge's evaluation runs attacks: give their budgets")
        problem = await run_in_threadpool(judge_problem, info.source, info.name, targets)
        if problem:
            raise _invalid(("body", "base_model"), problem)
        fields["budgets"] = body.budgets
    check_memory("evaluation", memory.evaluation_bytes(info), svc.settings.job_memory)
    timeout = min(body.timeout_s, svc.settings.max_evaluate_timeout_s)
    eval_id, rec = await svc.submit_evaluation(tenant=tenant, erasure_id=job_id, base_model=info.name,
                                               budgets=fields.get("budgets") or {}, seed=body.seed,
                                               targets=targets, steps=body.steps, timeout=timeout, judge=judge,
                                               samples=fields.get("samples", 0), items=fields.get("items"),
                                               threat=threat)
    return JSONResponse(status_code=202, content=evaluation_view(rec, None),
                        headers={"Location": f"/v1/erasures/{job_id}/evaluations/{eval_id}"})


async def _evaluations(svc: Svc, tenant: str, job_id: str) -> list[dict[str, Any]]:
    manifest = await svc.manifest(tenant, job_id) or {}
    done = {e["id"]: e for e in manifest.get("evaluations", []) if isinstance(e, dict) and e.get("id")}
    out = [evaluation_view(None, e) for e in done.values()]
    for eid in await svc.evaluation_ids(job_id, MAX_LISTED):
        if eid in done:
            continue
        rec = await svc.record(eid, tenant, "evaluation")
        if rec is not None and rec.get("erasure_id") == job_id:
            out.append(evaluation_view(rec, None))
    return out


@router.get("/v1/erasures/{job_id}/evaluations",
            responses={404: {"description": "no such erasure for this tenant"}})
async def list_evaluations(job_id: JobId, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    """Finished evaluations (kept in the checkpoint's manifest) first, then those still queued/running/failed."""
    await _erasure_or_404(svc, tenant, job_id)
    return {"items": await _evaluations(svc, tenant, job_id)}


@router.get("/v1/erasures/{job_id}/evaluations/{eval_id}",
            responses={404: {"description": "no such erasure or evaluation for this tenant"}})
async def get_evaluation(job_id: JobId, eval_id: JobId, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    """One evaluation: status and progress while it runs; ASR, efficacy and the attacks' findings once done."""
    await _erasure_or_404(svc, tenant, job_id)
    for item in await _evaluations(svc, tenant, job_id):
        if item["id"] == eval_id:
            return item
    raise not_found("evaluation")




@router.get("/v1/erasures/{job_id}/evaluations/{eval_id}/images/{name}", response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "one before/after image"},
                       404: {"description": "no such erasure, evaluation or image for this tenant"}})
async def evaluation_image(job_id: JobId, eval_id: JobId, name: str, tenant: Tenant, svc: Svc) -> Response:
    """One image an image-judge evaluation drew (its per-prompt ``images`` links point here)."""
    await _erasure_or_404(svc, tenant, job_id)
    if not re.fullmatch(IMAGE_NAME_RE, name):
        raise not_found("image")
    manifest = await svc.manifest(tenant, job_id) or {}
    if not any(isinstance(e, dict) and e.get("id") == eval_id for e in manifest.get("evaluations", [])):
        raise not_found("evaluation")
    try:
        data = await run_in_threadpool(svc.storage.get_bytes, image_key(tenant, job_id, eval_id, name), 16 << 20)
    except (FileNotFoundError, KeyError):
        raise not_found("image") from None
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=31536000, immutable"})


@router.post("/v1/erasures/{job_id}/evaluations/{eval_id}/cancel", status_code=202,
             responses={404: {"description": "no such erasure or evaluation for this tenant"},
                        409: {"description": "the evaluation has finished: nothing to cancel"}})
async def cancel_evaluation(job_id: JobId, eval_id: JobId, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    """Cancel a queued or running evaluation (a running one stops at its next progress step). Finished
    evaluations stay with the erasure's checkpoint and go with the erasure's ``DELETE``."""
    await _erasure_or_404(svc, tenant, job_id)
    rec = await svc.record(eval_id, tenant, "evaluation")
    if rec is None or rec.get("erasure_id") != job_id:
        raise not_found("evaluation")
    if rec.get("status") in store.TERMINAL:
        raise HTTPException(409, f"evaluation {eval_id} is {rec['status']}: only a queued or running one can be "
                                 "cancelled (finished ones stay with the checkpoint)")
    await svc.cancel(tenant, eval_id)
    return evaluation_view(await svc.record(eval_id, tenant, "evaluation") or rec, None)
