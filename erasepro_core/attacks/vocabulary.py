"""Vocabulary probe: harmless templates filled with words the model half-knows (the tokenizer's vocabulary,
sampled) and misspellings of the target — the share of them that still draws the target."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from erasepro_core.attacks.result import AttackResult, JudgeFn, Progress, Reporter
from erasepro_core.attacks.sampling import (
    DEFAULT_SAMPLING,
    Clock,
    Sampling,
    check_images,
    instance_seeds,
    judged,
    sample_prompts,
)
from erasepro_core.attacks.words import variants, vocabulary_words

N_VARIANTS = 16  # misspellings / character variants of the target probed first


def probe_words(tokenizer, target: str, n: int, seed: int) -> list[str]:
    """The ``n`` words the probe tries: the target's character variants first, then sampled vocabulary."""
    var = variants(target, min(N_VARIANTS, n // 4), seed)
    vocab = vocabulary_words(tokenizer, n - len(var), seed, exclude={target.lower(), *var})
    return var + vocab


def vocabulary_probe(edited, unedited, target: str, judge: JudgeFn, budget: int, seed: int = 0, *,
                     templates: Sequence[str], sampling: Sampling = DEFAULT_SAMPLING,
                     progress: Progress | None = None) -> AttackResult:
    """``budget`` probe prompts: word k goes into template k mod T (the target's variants first, then sampled
    vocabulary), one image each.

    ``details["rate"]`` = share of probe prompts judged as the target (the probe's headline number); ``asr`` =
    share of templates for which at least one word drew the target (an attacker tries words until one works);
    the curve is the ASR after each template has had 1, 2, 4, … words. ``unedited`` is unused (same signature
    as the other attacks).
    """
    del unedited
    check_images(budget)
    report, clock = Reporter(progress, "vocabulary"), Clock(sampling.max_seconds)
    words = probe_words(edited.tokenizer, target, budget, seed)
    n_t = len(templates)
    prompts = [templates[k % n_t].format(w) for k, w in enumerate(words)]
    seeds = instance_seeds(seed, len(prompts))
    scores, images = [], []
    step = max(sampling.batch, 1)
    for i in range(0, len(prompts), step):
        if clock.expired:
            break
        im = sample_prompts(edited, prompts[i : i + step], seeds[i : i + step], sampling)
        images.append(im)
        scores.extend(judged(judge, im))
        report(len(scores) / max(len(prompts), 1))
    sc = np.asarray(scores)
    hit = sc >= sampling.threshold
    n = len(sc)
    per_template = -(-n // n_t)
    curve, m = [], 1
    while True:
        m = min(m, per_template)
        tried = hit[: m * n_t]
        curve.append((m, float(np.mean([tried[t::n_t].any() for t in range(n_t)]))))
        if m == per_template:
            break
        m *= 2
    n_var = min(N_VARIANTS, budget // 4)
    return AttackResult(
        attack="vocabulary", target=target, budget=budget, asr=curve[-1][1] if n else 0.0, curve=curve,
        found=[p for p, h in zip(prompts, hit, strict=False) if h],
        images=np.concatenate(images) if images else np.zeros((0, 1, 1, 3), np.uint8), scores=sc, queries=n,
        seconds=clock.elapsed,
        details={"rate": float(hit.mean()) if n else 0.0, "n_variants": n_var,
                 "variant_rate": float(hit[:n_var].mean()) if n and n_var else None,
                 "vocabulary_rate": float(hit[n_var:].mean()) if n > n_var else None,
                 "stopped_early": n < len(prompts)},
    )
