"""The threat-model evaluation of a finished canvas erasure: T1 and T2 attack success reported apart, every rate
with its sample size and 95 % interval (docs/method.md, "Threat models"; the body of the evaluation job when a
request names ``threat_models``).

* **T1** (text only): for each erased style or character and each category of :mod:`erasepro_core.robust.t1`,
  ``n`` attack prompts are drawn from the edited model (``base + delta``) and read by the canvas judge. The
  attack success of a category is ``k/n``, ``k`` = images on which the judge sees the erased concept, with the
  Wilson interval ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``, z = 1.96. ``pooled`` pools the attack
  categories (every one but ``canonical``, the reference). With ``compare_unedited`` the same prompts and seeds are
  drawn from the unedited model too, and ``vs_unedited`` is the paired difference ``mean(a_i − b_i)`` with a 95 %
  paired-bootstrap interval. Where the erasure has a prompt guard, ``guard`` is the share of the category's
  prompts it flags and ``through_guard`` the attack success at the generation endpoint with the guard refusing
  (a flagged prompt draws nothing: success = seen ∧ ¬flagged); with ``log`` nothing is refused.
* **T2** (embeddings): the soft-token, concept-direction and closed-form attacks of :mod:`erasepro_core.attacks`
  at the given budgets, on the harmless templates of :mod:`erasepro_core.robust.t2`; ``n`` = instances
  (template × seed, or soft-token images), ``k`` = those the judge reads as the concept at any setting tried.

Every row is one dict (:func:`rate_row`) labelled with its ``threat_model``; the whole job is bounded by
``max_seconds``: T1 units stop starting once T1's share of it (by units) is spent, then each T2 attack gets
its share of what is left and stops itself there.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from erasepro_core.intervals import paired_difference, rate_ci

Progress = Callable[[str, float], None]
#: The word search's pool of vocabulary words and sweeps in the job (the benchmark: 512 and 2, minutes per name).
JOB_SEARCH = {"pool": 128, "sweeps": 1}
CHUNK = 8  # T1 prompts drawn between two looks at the clock (a unit stops part-way once its time is spent)
GUIDANCE = 5.0  # classifier-free guidance of every image (as the canvas benchmarks)


def rate(seen: Sequence[bool] | np.ndarray) -> dict[str, Any]:
    """:func:`erasepro_core.intervals.rate_ci` to 4 decimals (``rate`` None when n = 0)."""
    return rate_ci(seen, digits=4)


def paired(a: Sequence[int], b: Sequence[int]) -> dict[str, Any]:
    """:func:`erasepro_core.intervals.paired_difference` (2,000 resamples) to 4 decimals."""
    return paired_difference(a, b, n_boot=2000, digits=4)


def rate_row(threat_model: str, target: str, kind: str, attack: str, seen: Sequence[bool] | np.ndarray,
             **extra: Any) -> dict[str, Any]:
    """One row of the report: which threat model, target (and its kind), attack (a T1 category, ``pooled`` or a
    T2 attack), then :func:`rate` of ``seen`` and any ``extra`` fields."""
    if threat_model not in ("T1", "T2"):
        raise ValueError(f"threat_model must be 'T1' or 'T2', not {threat_model!r}")
    return {"threat_model": threat_model, "target": target, "kind": kind, "attack": attack, **rate(seen), **extra}


def t1_row(target: str, kind: str, category: str, seen: np.ndarray, *, unedited: np.ndarray | None = None,
           flagged: np.ndarray | None = None, refuses: bool = False, examples: Sequence[str] = ()) -> dict[str, Any]:
    """A T1 row: the edited model's attack success, and where given the unedited model's on the same prompts
    and seeds (``unedited``, ``vs_unedited``) and the guard's verdicts (``guard``, ``through_guard``)."""
    extra: dict[str, Any] = {}
    if unedited is not None:
        extra["unedited"] = rate(unedited)
        extra["vs_unedited"] = paired(seen.astype(int).tolist(), unedited.astype(int).tolist())
    if flagged is not None:
        extra["guard"] = rate(flagged)
        extra["through_guard"] = rate(seen & ~flagged if refuses else seen)
    if examples:
        extra["examples"] = list(examples)[:3]
    return rate_row("T1", target, kind, category, seen, **extra)


def kind_of(target: str) -> str:
    """``style`` for a canvas artist, ``character`` for a canvas character."""
    from erasepro_core.canvas.world import ARTISTS, CHARACTERS

    if target in ARTISTS:
        return "style"
    if target in CHARACTERS:
        return "character"
    raise ValueError(f"{target!r} is neither a canvas style (artist) nor a canvas character")


def defences(spec: dict[str, Any]) -> list[dict[str, str]]:
    """What the erasure's method (and its prompt guard, if any) defends against under T1 and T2, as the method
    registry states it (``MethodConfig.threat_models``; docs/method.md's table)."""
    from erasepro_core.methods import METHODS

    name = str(spec.get("method") or "erasepro")
    method = METHODS.get(name)
    said = method.config.threat_models if method else {"T1": "not measured", "T2": "not measured"}
    out = [{"what": f"method {name}", "T1": said["T1"], "T2": said["T2"]}]
    guard = spec.get("prompt_guard") or "off"
    if guard != "off":
        out.append({"what": f"prompt guard ({guard})",
                    "T1": ("refuses flagged prompts at this service's generation endpoint" if guard == "refuse" else
                           "logs flagged prompts at this service's generation endpoint, refuses none"),
                    "T2": "no: it reads text; a downloaded checkpoint has no guard"})
    return out


class _Clock:
    def __init__(self, max_seconds: float) -> None:
        self.t0, self.max_seconds = time.monotonic(), max_seconds

    @property
    def left(self) -> float:
        return self.max_seconds - (time.monotonic() - self.t0)


def evaluate_threat_models(base: Any, delta: Any, targets: Sequence[str], *, threat_models: Sequence[str],
                           per_category: int = 16, categories: Sequence[str] | None = None,
                           budgets: dict[str, int] | None = None, compare_unedited: bool = True, seed: int = 0,
                           steps: int = 20, max_seconds: float = 1800.0, guard: Any = None, judge: Any = None,
                           progress: Progress | None = None) -> dict[str, Any]:
    """``{"rows": [...], "summary": {"T1": ..., "T2": ...}, "settings": ..., "truncated": [reasons]}`` for
    ``base`` + ``delta`` (``base`` left unchanged) on canvas ``targets``. ``summary.T1`` pools every target's
    attack categories (with the unedited model's and the paired difference where drawn); ``summary.T2[attack]``
    sums k and n over targets."""
    from erasepro_core.attacks import ATTACKS, Sampling
    from erasepro_core.canvas.bench import judge_prompts
    from erasepro_core.canvas.judge import load_judge
    from erasepro_core.delta import apply_delta
    from erasepro_core.robust.t1 import T1_ATTACKS, T1_CATEGORIES, attack_prompts, categories_for
    from erasepro_core.robust.t2 import T2_TEMPLATES, canvas_judge_fn

    unknown = sorted(set(threat_models) - {"T1", "T2"})
    if unknown or not threat_models:
        raise ValueError(f"threat_models: some of ['T1', 'T2'] (got {unknown or 'none'})")
    cats = categories_for(categories or T1_CATEGORIES) if "T1" in threat_models else []
    budgets = dict(budgets or {}) if "T2" in threat_models else {}
    stray = sorted(set(budgets) - {"soft_token", "concept_direction", "closed_form"})
    if stray:
        raise ValueError(f"budgets: T2 attacks only, not {stray}")
    kinds = {t: kind_of(t) for t in targets}
    judge = judge or load_judge()
    edited = copy.deepcopy(base)
    apply_delta(edited, delta)
    clock = _Clock(max_seconds)
    per_t1 = 2 if compare_unedited else 1
    units = len(targets) * (len(cats) * per_t1 + len(budgets))
    # T1 may start units until its share of the time bound is spent; T2 then shares out what is left
    t1_until = max_seconds * len(cats) * per_t1 / (len(cats) * per_t1 + len(budgets) or 1)
    done = 0
    rows: list[dict[str, Any]] = []
    truncated: list[str] = []
    stop = False
    pooled: dict[str, list[np.ndarray]] = {"edited": [], "unedited": []}
    guard_refuses = bool(guard is not None and getattr(guard, "mode", "") == "refuse")

    def tick(stage: str, frac: float = 0.0) -> None:
        if progress is not None:
            progress(stage, min(1.0, (done + frac) / max(units, 1)))

    for ti, target in enumerate(targets):
        kind = kinds[target]
        per_prompt: dict[str, np.ndarray] = {}
        per_base: dict[str, np.ndarray] = {}
        for ci, cat in enumerate(cats):
            if max_seconds - clock.left > t1_until:
                truncated.append(f"T1's share of the time bound ({t1_until:.0f} of {max_seconds:.0f} s) ran out "
                                 f"before {cat} of {target!r}")
                stop = True
                break
            tick(f"T1 {cat}: {target}")
            search = {**JOB_SEARCH, "deadline": time.monotonic() + max(0.0, t1_until - (max_seconds - clock.left))}
            prompts = attack_prompts(kind, target, cat, per_category, seed, base, search=search)
            img_seed = seed + 7919 * ci + 104_729 * ti  # as run_t1: one seed stream per category (and target)
            got: dict[str, list[np.ndarray]] = {"edited": [], "unedited": []}
            for i in range(0, len(prompts), CHUNK):
                if i and max_seconds - clock.left > t1_until:
                    truncated.append(f"T1's share of the time bound ({t1_until:.0f} of {max_seconds:.0f} s) ran "
                                     f"out after {i} of {len(prompts)} {cat} prompts of {target!r}")
                    prompts, stop = prompts[:i], True
                    break
                part = prompts[i : i + CHUNK]
                got["edited"].append(judge_prompts(edited, judge, kind, part, img_seed + i, steps,
                                                   GUIDANCE).concept_seen)
                if compare_unedited:
                    got["unedited"].append(judge_prompts(base, judge, kind, part, img_seed + i, steps,
                                                         GUIDANCE).concept_seen)
                tick(f"T1 {cat}: {target}", per_t1 * min(1.0, (i + CHUNK) / len(prompts)))
            done += per_t1
            texts = [p.text for p in prompts]
            seen = np.concatenate(got["edited"])
            unedited = np.concatenate(got["unedited"]) if compare_unedited else None
            flagged = np.asarray(guard.flags(base, texts), dtype=bool) if guard is not None else None
            rows.append(t1_row(target, kind, cat, seen, unedited=unedited, flagged=flagged, refuses=guard_refuses,
                               examples=texts))
            per_prompt[cat] = seen
            if unedited is not None:
                per_base[cat] = unedited
            if flagged is not None:
                per_prompt[f"{cat}:flag"] = flagged
            if stop:
                break
        attacks = [c for c in cats if c in T1_ATTACKS and c in per_prompt]
        if attacks:
            seen = np.concatenate([per_prompt[c] for c in attacks])
            unedited = np.concatenate([per_base[c] for c in attacks]) if compare_unedited else None
            flagged = (np.concatenate([per_prompt[f"{c}:flag"] for c in attacks]) if guard is not None else None)
            rows.append(t1_row(target, kind, "pooled", seen, unedited=unedited, flagged=flagged,
                               refuses=guard_refuses))
            pooled["edited"].append(seen)
            if unedited is not None:
                pooled["unedited"].append(unedited)
        if stop:
            break

    stop = False
    if budgets:
        for ti, target in enumerate(targets):
            kind = kinds[target]
            jf = canvas_judge_fn(kind, target, judge)
            for ai, (name, budget) in enumerate(budgets.items()):
                left = len(targets) * len(budgets) - (ti * len(budgets) + ai)
                share = clock.left / left
                if share <= 0:
                    truncated.append(f"the time bound ({max_seconds:.0f} s) ran out before T2 {name} of {target!r}")
                    stop = True
                    break
                reps = max(1, math.ceil(per_category / len(T2_TEMPLATES[kind])))
                kw: dict[str, Any] = ({"refs": reps, "n_tokens": 2, "lr": 0.05} if name == "soft_token" else
                                      {"per_template": reps, **({"columns": "concept"} if name == "closed_form"
                                                                else {})})
                sampling = Sampling(steps=steps, guidance=GUIDANCE, batch=64, max_seconds=max(1.0, share))
                res = ATTACKS[name](edited, base, target, jf, budget, seed, templates=T2_TEMPLATES[kind],
                                    sampling=sampling, progress=lambda s, f, _n=name, _t=target:
                                    tick(f"T2 {_n}: {_t}", f), **kw)
                done += 1
                n = int(len(res.scores))
                k = int(round(res.asr * n))
                rows.append(rate_row("T2", target, kind, name, np.arange(n) < k, budget=budget,
                                     curve=[[b, round(a, 4)] for b, a in res.curve],
                                     seconds=round(res.seconds, 2),
                                     stopped_early=bool(res.curve and res.curve[-1][0] < budget)))
            if stop:
                break
    tick("summary", 0.0)
    return {"rows": rows, "summary": summarise(rows, pooled), "truncated": truncated,
            "settings": {"threat_models": list(threat_models), "per_category": per_category, "categories": cats,
                         "budgets": budgets, "compare_unedited": compare_unedited, "seed": seed, "steps": steps,
                         "guidance": GUIDANCE, "word_search": dict(JOB_SEARCH),
                         "guard": getattr(guard, "mode", None) if guard is not None else None}}


def summarise(rows: list[dict[str, Any]], pooled: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """T1: the pooled attack success over every target (and the unedited model's, the paired difference); T2:
    per attack, k and n summed over targets, with the Wilson interval of the sum."""
    out: dict[str, Any] = {}
    if pooled["edited"]:
        seen = np.concatenate(pooled["edited"])
        t1: dict[str, Any] = {"pooled": rate(seen)}
        if pooled["unedited"]:
            base = np.concatenate(pooled["unedited"])
            t1 |= {"unedited": rate(base), "vs_unedited": paired(seen.astype(int).tolist(), base.astype(int).tolist())}
        guarded = [r["through_guard"] for r in rows if r["threat_model"] == "T1" and r["attack"] == "pooled"
                   and "through_guard" in r]
        if guarded:
            k, n = sum(g["k"] for g in guarded), sum(g["n"] for g in guarded)
            t1["through_guard"] = rate(np.arange(n) < k)
        out["T1"] = t1
    t2: dict[str, Any] = {}
    for r in rows:
        if r["threat_model"] == "T2":
            acc = t2.setdefault(r["attack"], {"k": 0, "n": 0})
            acc["k"] += r["k"]
            acc["n"] += r["n"]
    if t2:
        out["T2"] = {a: rate(np.arange(v["n"]) < v["k"]) for a, v in t2.items()}
    return out
