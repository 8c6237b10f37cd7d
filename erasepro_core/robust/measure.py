"""T1 attack success on the canvas world: erase N concepts with a method, then judge the edited model's images
for each T1 category's attack prompts (does the judge see the erased style/character?) and for the other
concepts' canonical prompts (specificity), against the unedited model on the same prompts and seeds."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from erasepro_core.canvas.bench import build_spec, choose_concepts, concept_prompts, concepts_of, judge_prompts
from erasepro_core.canvas.captions import Prompt
from erasepro_core.intervals import paired_difference, rate_ci
from erasepro_core.robust.t1 import T1_ATTACKS, T1_CATEGORIES, attack_prompts, categories_for

SpecHook = Callable[[Any, Any, list[str]], Any]  # (pipe, spec, erased names) -> spec


def t1_prompt_sets(pipe, kind: str, erased: Sequence[str], categories: Sequence[str], n: int, seed: int,
                   search: dict[str, int] | None = None) -> dict[str, list[Prompt]]:
    """Per category ``n`` attack prompts cycling over the erased concepts (``n // N`` or one more each);
    ``search``: the word search's budget (:func:`erasepro_core.robust.t1.word_search_names`' keywords)."""
    out: dict[str, list[Prompt]] = {}
    for cat in categories_for(categories):
        per = [attack_prompts(kind, name, cat, -(-n // len(erased)), seed, pipe, search) for name in erased]
        out[cat] = [per[i % len(erased)][i // len(erased)] for i in range(n)]
    return out


def run_t1(pipe, judge, *, kind: str = "style", concepts: int = 1, seed: int = 0,
           methods: dict[str, dict[str, Any] | None], categories: Sequence[str] = T1_CATEGORIES, n: int = 40,
           n_preserved: int = 40, steps: int = 20, guidance: float = 5.0,
           hooks: dict[str, SpecHook] | None = None, log: Callable[[str], None] | None = None,
           on_method: Callable[[dict[str, Any]], None] | None = None,
           search: dict[str, int] | None = None) -> dict[str, Any]:
    """For each method (``None`` = the unedited model): the rate at which the judge sees the erased concept on each
    category's prompts, the pooled T1 attack success (every category but ``canonical``), the other concepts'
    preserved accuracy and the objects' accuracy, each with k, n and a 95 % Wilson interval; per-prompt outcomes
    and paired differences against the unedited model. ``hooks[name]`` may rewrite a method's spec
    (concept expansion); ``on_method(partial result)`` is called after each method."""
    from erasepro_core.delta import applied_delta
    from erasepro_core.erasure import erase

    erased = choose_concepts(kind, concepts, seed)
    others = [c for c in concepts_of(kind) if c not in erased]
    t0 = time.time()
    sets = t1_prompt_sets(pipe, kind, erased, categories, n, seed, search)
    preserved = concept_prompts(kind, others, n_preserved, seed, 2)
    out: dict[str, Any] = {"kind": kind, "concepts": concepts, "seed": seed, "erased": erased,
                           "prompts": {c: [p.text for p in ps] for c, ps in sets.items()},
                           "sampling": {"steps": steps, "guidance": guidance}, "search": search or {},
                           "methods": {}}
    for mi, (mname, options) in enumerate(methods.items()):
        t = time.time()
        extra: dict[str, Any] = {}
        ctx = None
        if options is not None:
            spec = build_spec(kind, erased, options)
            if hooks and mname in hooks:
                spec = hooks[mname](pipe, spec, erased)
                extra["targets"] = [e.target for e in spec.edits]
            res = erase(pipe, spec)
            extra["columns"] = int(res.report.get("n_constraints") or 0)
            ctx = applied_delta(pipe, res.delta)
            ctx.__enter__()
        try:
            row: dict[str, Any] = {"options": options, **extra, "categories": {}, "per_prompt": {}}
            for ci, (cat, ps) in enumerate(sets.items()):
                j = judge_prompts(pipe, judge, kind, ps, seed + 7919 * ci, steps, guidance)
                row["categories"][cat] = rate_ci(j.concept_seen)
                row["per_prompt"][cat] = j.concept_seen.astype(int).tolist()
                row.setdefault("_objects", []).append(j.objects_ok)
            pj = judge_prompts(pipe, judge, kind, preserved, seed + 100_000, steps, guidance)
            row["preserved"] = rate_ci(pj.concept_seen)
            row["per_prompt"]["preserved"] = pj.concept_seen.astype(int).tolist()
            row["objects"] = rate_ci(np.concatenate([*row.pop("_objects"), pj.objects_ok]))
            attacks = [c for c in sets if c in T1_ATTACKS]
            pooled = np.concatenate([np.asarray(row["per_prompt"][c]) for c in attacks]) if attacks else np.zeros(0)
            row["t1_pooled"] = rate_ci(pooled.astype(bool))
            row["per_prompt"]["t1_pooled"] = pooled.astype(int).tolist()
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
        row["seconds"] = round(time.time() - t, 1)
        out["methods"][mname] = row
        if log:
            cats = " ".join(f"{c}={row['categories'][c]['rate']:.2f}" for c in sets)
            log(f"{kind} N={concepts} {mname}: {cats} | T1 {row['t1_pooled']['rate']:.2f} preserved "
                f"{row['preserved']['rate']:.2f} objects {row['objects']['rate']:.2f} ({row['seconds']:.0f}s)")
        del mi
        _compare(out)
        out["seconds"] = round(time.time() - t0, 1)
        if on_method:
            on_method(out)
    return out


def _compare(out: dict[str, Any]) -> None:
    """Paired differences of every method against the unedited model on the same prompts and seeds."""
    base = out["methods"].get("unedited")
    if base is None:
        return
    for mname, row in out["methods"].items():
        if mname != "unedited":
            row["vs_unedited"] = {k: paired_difference(row["per_prompt"][k], base["per_prompt"][k])
                                  for k in ("t1_pooled", "preserved")}
