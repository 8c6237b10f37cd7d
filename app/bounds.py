"""Per-model bounds checked at the door (no torch): generation size/steps/count, erasure layers and cost.

Everything here needs the registry (a model's resolution, its text encoder's depth, its default preserve set);
spec-level checks (templates, characters, numeric ranges) live in :mod:`erasepro_core.spec`.
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError

from erasepro_jobs import memory
from erasepro_jobs.registry import BaseModelInfo


def _error(loc: tuple[Any, ...], msg: str) -> dict[str, Any]:
    return {"type": "value_error", "loc": loc, "msg": msg}


def erasure_cost(spec: Any, info: BaseModelInfo) -> tuple[int, int]:
    """``(cost, preserve prompts)``: cost = edits × templates × max(1, preserve prompts), where the preserve
    prompts are the request's plus the model's default set when ``default_preserve`` is on."""
    preserve = len(spec.preserve) + (info.preserve_prompts if spec.default_preserve else 0)
    return len(spec.edits) * len(spec.templates) * max(1, preserve), preserve


def check_erasure(spec: Any, info: BaseModelInfo, max_cost: int, job_memory: int | None = None) -> None:
    """422 naming the field when ``layers`` are out of the model's range, the estimated cost is too high, or the
    estimated peak memory (:func:`erasepro_jobs.memory.erasure_bytes`) exceeds ``job_memory``."""
    errors = []
    n = info.text_layers
    _, layers = spec.method.progressive_stage()
    if layers is not None and n is not None:
        for pos, layer in enumerate(layers):
            if not -n <= layer < n:
                errors.append(_error(("body", "options", "layers", pos),
                                     f"layer {layer} is out of range for base model {info.name!r}, whose text "
                                     f"encoder has {n} layers feeding the UNet (valid: {-n}..{n - 1})"))
    cost, preserve = erasure_cost(spec, info)
    if cost > max_cost:
        errors.append(_error(("body",), f"estimated cost {cost} = {len(spec.edits)} edits × {len(spec.templates)} "
                                        f"templates × {max(1, preserve)} preserve prompts exceeds this server's "
                                        f"limit of {max_cost}; split the job or use fewer templates/prompts"))
    if job_memory is not None and not errors:
        problem = memory.over_limit("erasure", memory.erasure_bytes(spec, info), job_memory)
        if problem:
            errors.append(_error(("body",), problem))
    if errors:
        raise RequestValidationError(errors)


def check_generation(body: Any, info: BaseModelInfo, job_memory: int | None = None) -> None:
    """422 naming the field when a generation exceeds the model's bounds (see :class:`ModelLimits`) or its
    estimated peak memory exceeds ``job_memory``."""
    lim = info.limits
    width, height = body.width or lim.resolution, body.height or lim.resolution
    errors = []
    for name, side in (("width", width), ("height", height)):
        if side > lim.max_side:
            errors.append(_error(("body", name), f"{name} {side} exceeds {lim.max_side} for base model "
                                                 f"{info.name!r} (native resolution {lim.resolution})"))
    if body.steps is not None and body.steps > lim.max_steps:  # None: the family's default
        errors.append(_error(("body", "steps"), f"steps must be at most {lim.max_steps} for {info.name!r}"))
    if body.num_images > lim.max_images:
        errors.append(_error(("body", "num_images"), f"num_images must be at most {lim.max_images} for "
                                                     f"{info.name!r}"))
    if width * height * body.num_images > lim.max_pixels:
        errors.append(_error(("body", "num_images"), f"width × height × num_images = {width * height * body.num_images}"
                                                     f" exceeds {lim.max_pixels} pixels for {info.name!r}"))
    if job_memory is not None and not errors:
        problem = memory.over_limit("generation", memory.generation_bytes(info, width, height, body.num_images),
                                    job_memory)
        if problem:
            errors.append(_error(("body",), problem))
    if errors:
        raise RequestValidationError(errors)


def check_memory(what: str, estimate: int, job_memory: int, loc: tuple[Any, ...] = ("body",)) -> None:
    """422 when a job's estimated peak memory exceeds ``job_memory`` (evaluations, exports)."""
    problem = memory.over_limit(what, estimate, job_memory)
    if problem:
        raise RequestValidationError([_error(loc, problem)])
