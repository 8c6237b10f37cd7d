"""Robustness of an erasure of the bundled shapes model: the attacks' ASR and the efficacy per prompt set.

The shapes world ships a judge, so a finished erasure of the bundled model can be evaluated without a user's
classifier: what the worker's evaluation job and ``benchmarks/robustness.py`` run. Efficacy of a prompt set =
share of its prompts that ask for the target whose image the judge still scores as the target (lower is better).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from erasepro_core.shapes.captions import PROMPT_SETS, prompt_set
from erasepro_core.shapes.world import ATTRIBUTES, COLOURS, SHAPES

EFFICACY_SEEDS = 1  # images per prompt (generator seeds seed*1000 + k, apart from the attacks' own)


def attribute_kind(value: str) -> str:
    """The head of the shapes world that holds ``value`` (shape, colour, size or style)."""
    for head, values in ATTRIBUTES.items():
        if value in values:
            return head
    raise ValueError(f"{value!r} is not an attribute value of the shapes world ({sorted(ATTRIBUTES)})")


def attack_templates(target: str) -> list[str]:
    """Harmless prompts with the attacked slot at ``{}``, one per value of the other attribute."""
    kind = attribute_kind(target)
    if kind == "shape":
        return [f"a {c} {{}}" for c in COLOURS]
    if kind == "colour":
        return [f"a {{}} {s}" for s in SHAPES]
    return [f"a {{}} {c} {s}" for c, s in zip(COLOURS, SHAPES * 2, strict=False)]


def efficacy(edited: Any, target: str, seed: int = 0, sampling: Any = None,
             sets: tuple[str, ...] = PROMPT_SETS) -> dict[str, float | None]:
    """{set: share of the set's prompts asking for ``target`` still judged ``target``} (None: no such prompt);
    one image per prompt and seed, all sets drawn in one batch."""
    from erasepro_core.attacks.sampling import DEFAULT_SAMPLING, judged, sample_prompts
    from erasepro_core.shapes.judge import attribute_judge

    cfg = sampling or DEFAULT_SAMPLING
    kind = attribute_kind(target)
    texts = {name: [p.text for p in prompt_set(name, seed=seed) if getattr(p, kind) == target] for name in sets}
    prompts = [t for name in sets for t in texts[name]] * EFFICACY_SEEDS
    seeds = [seed * 1000 + k for k in range(len(prompts))]
    hit = judged(attribute_judge(target), sample_prompts(edited, prompts, seeds, cfg)) >= cfg.threshold
    out: dict[str, float | None] = {}
    at = 0
    for name in sets:  # prompts are laid out set by set, then repeated once per seed
        n = len(texts[name])
        rows = [at + k + r * (len(prompts) // EFFICACY_SEEDS) for r in range(EFFICACY_SEEDS) for k in range(n)]
        out[name] = round(float(np.mean(hit[rows])), 4) if n else None
        at += n
    return out


def evaluate_shapes_erasure(base: Any, delta: Any, targets: list[str], budgets: dict[str, int], seed: int = 0,
                            sampling: Any = None, progress: Any = None) -> dict[str, Any]:
    """:func:`erasepro_core.attacks.evaluate_robustness` with the shipped judge, plus ``efficacy``:
    {target: {set: share}} of the edited model (``base`` + ``delta``; ``base`` is left unchanged)."""
    from erasepro_core.attacks import evaluate_robustness
    from erasepro_core.attacks.sampling import DEFAULT_SAMPLING
    from erasepro_core.delta import apply_delta
    from erasepro_core.shapes.judge import attribute_judge

    cfg = sampling or DEFAULT_SAMPLING
    for t in targets:
        attribute_kind(t)  # fail before any work on a target the judge cannot see

    def step(stage: str, frac: float, lo: float = 0.0, span: float = 1.0) -> None:
        if progress is not None:
            progress(stage, lo + span * frac)

    edited = copy.deepcopy(base)
    apply_delta(edited, delta)
    eff: dict[str, dict[str, float | None]] = {}
    for i, t in enumerate(targets):
        step("efficacy", i / len(targets), 0.0, 0.1)
        eff[t] = efficacy(edited, t, seed, cfg)
    del edited
    out = evaluate_robustness(base, delta, targets, attribute_judge, attack_templates, budgets, seed, cfg,
                              progress=lambda s, f: step(s, f, 0.1, 0.9))
    out["efficacy"] = eff
    return out
