"""Robustness of a finished erasure: run chosen attacks against (base + delta) and return JSON-safe numbers.

This is the body a worker's evaluation job runs (base pipeline and delta in, report out); the judge and the
harmless templates are parameters, so it works for the shapes world (``attribute_judge``) and for real models
with a user's classifier.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from erasepro_core.attacks import ATTACKS, MAX_TARGETS
from erasepro_core.attacks.result import JudgeFn, Progress
from erasepro_core.attacks.sampling import DEFAULT_SAMPLING, Sampling


def evaluate_robustness(base: Any, delta: Any, targets: Sequence[str], judge_for: Callable[[str], JudgeFn],
                        templates_for: Callable[[str], Sequence[str]], budgets: dict[str, int], seed: int = 0,
                        sampling: Sampling = DEFAULT_SAMPLING, progress: Progress | None = None) -> dict[str, Any]:
    """{"attacks": {target: {attack: AttackResult.summary()}}, "asr": {attack: mean ASR over targets}} for
    the edited model ``base`` + ``delta`` (``base`` itself is left unchanged). ``budgets`` maps attack names
    of :data:`erasepro_core.attacks.ATTACKS` to their budget."""
    from erasepro_core.delta import apply_delta

    unknown = sorted(set(budgets) - set(ATTACKS))
    if unknown or not budgets:
        raise ValueError(f"budgets: attacks must be among {sorted(ATTACKS)} (got {unknown or 'none'})")
    if not 1 <= len(targets) <= MAX_TARGETS:
        raise ValueError(f"targets: give 1..{MAX_TARGETS}")
    edited = copy.deepcopy(base)
    apply_delta(edited, delta)
    out: dict[str, Any] = {"attacks": {}, "asr": {}, "seed": seed, "budgets": dict(budgets)}
    n, done = len(targets) * len(budgets), 0
    for target in targets:
        out["attacks"][target] = {}
        for name, budget in budgets.items():
            def step(stage: str, frac: float, _done: int = done) -> None:
                if progress is not None:
                    progress(stage, (_done + frac) / n)

            res = ATTACKS[name](edited, base, target, judge_for(target), budget, seed,
                                templates=templates_for(target), sampling=sampling, progress=step)
            out["attacks"][target][name] = res.summary()
            done += 1
    for name in budgets:
        vals = [out["attacks"][t][name]["asr"] for t in targets]
        out["asr"][name] = round(sum(vals) / len(vals), 4)
    return out
