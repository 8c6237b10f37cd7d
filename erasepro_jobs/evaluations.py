"""Evaluations of a finished erasure (torch-free, no HTTP): bounds, where they are kept, and their JSON view.

A finished evaluation lives in the erasure's ``manifest.json`` (``evaluations``, newest :data:`MAX_KEPT`), so it
survives a Redis flush and goes when the erasure is deleted; a queued/running/failed one lives in its Redis
record (kind ``evaluation``), listed per erasure under :func:`k_evaluations` until the records expire.
"""

from __future__ import annotations

from typing import Any

from erasepro_core.io import json_or_none
from erasepro_jobs import store
from erasepro_jobs.settings import REDIS_PREFIX

MAX_KEPT = 20  # evaluations kept in a manifest (oldest dropped): a bound on its size
JUDGED_SOURCES = ("bundled",)  # base models that ship a judge: only the bundled shapes model

# The threat-model evaluation (docs/method.md, "Threat models"; erasepro_core/robust/threat.py): T1 = prompts typed
# at the generation endpoint, T2 = embeddings fed to a downloaded checkpoint; their names come from the torch-free
# erasepro_core.robust.names.
T2_BUDGETS: dict[str, int] = {"soft_token": 8, "concept_direction": 2, "closed_form": 2}  # when budgets are left out
THREAT_MODEL_BASES = ("canvas",)  # base models whose own judge the threat-model evaluation reads
MAX_PER_CATEGORY = 64  # attack prompts per T1 category and target (and ≈ T2 instances per attack and target)


IMAGE_NAME_RE = r"p[0-9]{2}-(before|after)-[0-9]\.png"  # an image-judge evaluation's images, per prompt and side


def image_name(prompt: int, side: str, k: int) -> str:
    return f"p{prompt:02d}-{side}-{k}.png"


def image_prefix(tenant: str, erasure_id: str, eval_id: str) -> str:
    """Where an evaluation's images live: beside the checkpoint, so they go when the erasure is deleted."""
    return store.checkpoint_key(tenant, erasure_id, f"evaluations/{eval_id}")


def image_key(tenant: str, erasure_id: str, eval_id: str, name: str) -> str:
    return f"{image_prefix(tenant, erasure_id, eval_id)}/{name}"


def k_evaluations(erasure_id: str) -> str:
    """Redis list of the evaluation job ids of one erasure."""
    return f"{REDIS_PREFIX}evaluations:{erasure_id}"


def judge_problem(source: str, name: str, targets: list[str]) -> str | None:
    """Why these targets of a model from ``source`` cannot be judged, or None."""
    if name == "canvas":
        return ("on the canvas model the attacks run in the threat-model evaluation: give \"threat_models\": "
                "[\"T2\"] with these budgets (T2 attacks only), or leave budgets out (docs/service.md, "
                "\"Threat-model evaluation\")")
    if source not in JUDGED_SOURCES:
        return (f"base model {name!r} ships no judge for attacks: only the bundled shapes model has one (for other "
                "models run erasepro_core.attacks.evaluate_robustness with your classifier); leave budgets out for "
                "a before/after evaluation by an image judge (nudenet, clip)")
    from erasepro_core.shapes.world import ATTRIBUTES  # numpy + PIL only

    known = {v for values in ATTRIBUTES.values() for v in values}
    unknown = [t for t in targets if t not in known]
    if unknown:
        return f"the bundled judge does not know {unknown}: it sees {sorted(known)}"
    return None


def threat_problem(base_model: str, targets: list[str]) -> str | None:
    """Why the threat-model evaluation cannot run on these targets of ``base_model``, or None (torch-free: the
    canvas world's names come from numpy + PIL only)."""
    if base_model not in THREAT_MODEL_BASES:
        return (f"the threat-model evaluation runs on {list(THREAT_MODEL_BASES)} only (its T1 prompts come from that "
                f"world's caption grammar, its judge reads the images), not on {base_model!r}: leave threat_models "
                "out for this base model's own evaluation")
    from erasepro_core.canvas.world import ARTISTS, CHARACTERS

    unknown = [t for t in targets if t not in ARTISTS and t not in CHARACTERS]
    if unknown:
        return (f"the canvas judge knows no {unknown}: the threat-model evaluation measures the canvas world's named "
                "styles (artists) and characters (docs/canvas.md)")
    return None


def summary_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The numbers a record keeps: ASR per attack (mean over targets) and efficacy per target and prompt set; for
    an image judge, which judge and the flagged rate before/after with its sample size and 95 % interval."""
    out = {"asr": entry.get("asr") or {}, "efficacy": entry.get("efficacy") or {}}
    report = entry.get("report")
    if report:
        out |= {"judge_settings": report.get("judge"), "before": report.get("before"), "after": report.get("after"),
                "samples_per_prompt": report.get("samples_per_prompt"), "prompts": report.get("prompts")}
    threat = entry.get("threat")
    if threat:
        out["threat_summary"] = threat.get("summary")
    return out


def _with_links(report: dict[str, Any] | None, erasure_id: str, eval_id: str) -> dict[str, Any] | None:
    """The judge's report with each prompt's image URLs (``images.before``/``images.after``)."""
    if not report:
        return report
    base = f"/v1/erasures/{erasure_id}/evaluations/{eval_id}/images"
    rows = []
    for i, row in enumerate(report.get("per_prompt") or []):
        images = {side: [f"{base}/{image_name(i, side, k)}" for k in range(len(row.get(side, {}).get("verdicts", [])))]
                  for side in ("before", "after")}
        rows.append({**row, "images": images})
    return {**report, "per_prompt": rows}


def evaluation_view(rec: dict[str, str] | None, entry: dict[str, Any] | None) -> dict[str, Any]:
    """One JSON shape for an evaluation, from its Redis record and/or its manifest entry."""
    rec, e = rec or {}, entry or {}
    status = rec.get("status") or ("succeeded" if entry else "failed")
    if entry:
        status = "succeeded"
    progress = json_or_none(rec.get("progress")) or ({"stage": "done", "fraction": 1.0} if entry else {})
    eid, erasure_id = rec.get("id") or e["id"], rec.get("erasure_id") or e.get("erasure_id", "")
    result = json_or_none(rec.get("result")) or {}
    return {
        "id": eid, "erasure_id": erasure_id, "status": status,
        "targets": e.get("targets") or json_or_none(rec.get("targets")) or [],
        "budgets": e.get("budgets") or json_or_none(rec.get("budgets")) or {},
        "seed": e.get("seed", int(rec.get("seed") or 0)),
        "steps": e.get("steps", int(rec.get("steps") or 0) or None),
        "created_at": store.iso(e.get("created_at") or rec.get("created_at")),
        "started_at": store.iso(e.get("started_at") or rec.get("started_at")),
        "finished_at": store.iso(e.get("finished_at") or rec.get("finished_at")),
        "progress": {"stage": progress.get("stage"), "fraction": float(progress.get("fraction") or 0.0)},
        "error": rec.get("error") or None,
        "asr": e.get("asr") if entry else (json_or_none(rec.get("result")) or {}).get("asr"),
        "efficacy": e.get("efficacy") if entry else (json_or_none(rec.get("result")) or {}).get("efficacy"),
        "attacks": e.get("attacks"),
        "judge": e.get("judge") or rec.get("judge") or "shapes",
        "samples": e.get("samples", int(rec.get("samples") or 0) or None),
        "report": _with_links(e.get("report"), erasure_id, eid) if entry else None,
        "threat_models": e.get("threat_models") or json_or_none(rec.get("threat_models")) or None,
        "threat": e.get("threat") if entry else None,
        "before": (e.get("report") or {}).get("before") if entry else result.get("before"),
        "after": (e.get("report") or {}).get("after") if entry else result.get("after"),
        "seconds": e.get("seconds"),
        "links": {"self": f"/v1/erasures/{erasure_id}/evaluations/{eid}", "erasure": f"/v1/erasures/{erasure_id}"},
    }


def evaluation_brief(entry: dict[str, Any]) -> dict[str, Any]:
    """What the erasure view shows of a finished evaluation: its id, when, the budgets and the numbers."""
    return {"id": entry.get("id"), "finished_at": store.iso(entry.get("finished_at")),
            "budgets": entry.get("budgets") or {}, "seed": entry.get("seed"), "judge": entry.get("judge") or "shapes",
            **summary_of(entry)}
