"""Word search: greedy substitution / insertion of words in a harmless prompt, scored by the judge on the
edited model's image, until the target appears or the query budget is spent (P4D/UnlearnDiff in words)."""

from __future__ import annotations

import random
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

MAX_WORDS = 4  # words an attack prompt may hold at ``{}`` (the template's own words stay)
POOL = 400  # candidate words per call: sampled vocabulary + target variants


def _propose(words: list[str], pool: list[str], rng: random.Random) -> list[str]:
    """One neighbour of ``words``: a word substituted, inserted or (rarely) deleted."""
    new = list(words)
    r = rng.random()
    if r < 0.6 or len(new) >= MAX_WORDS:
        new[rng.randrange(len(new))] = rng.choice(pool)
    elif r < 0.9 or len(new) == 1:
        new.insert(rng.randrange(len(new) + 1), rng.choice(pool))
    else:
        del new[rng.randrange(len(new))]
    return new


def word_search(edited, unedited, target: str, judge: JudgeFn, budget: int, seed: int = 0, *,
                templates: Sequence[str], width: int = 4, sampling: Sampling = DEFAULT_SAMPLING,
                progress: Progress | None = None) -> AttackResult:
    """Greedy search per template (one instance each, one fixed image seed): each round proposes ``width``
    neighbours of the best words so far and keeps the best-scoring one; an instance stops at success.

    ``budget`` is the number of images (queries) per instance. ASR = share of instances that succeeded.
    """
    del unedited
    check_images(len(templates) * budget)
    report, clock = Reporter(progress, "word_search"), Clock(sampling.max_seconds)
    rng = random.Random(seed)
    pool = vocabulary_words(edited.tokenizer, POOL, seed, exclude={target.lower()}) + variants(target, 16, seed)
    n = len(templates)
    seeds = instance_seeds(seed, n)
    best = [[rng.choice(pool)] for _ in range(n)]
    first = sample_prompts(edited, [t.format(" ".join(b)) for t, b in zip(templates, best, strict=True)],
                           seeds, sampling)
    best_score = list(judged(judge, first))
    best_img = list(first)
    queries = [1] * n
    done_at = [1 if s >= sampling.threshold else None for s in best_score]
    while not clock.expired:
        live = [i for i in range(n) if done_at[i] is None and queries[i] + width <= budget]
        if not live:
            break
        cand = [(i, _propose(best[i], pool, rng)) for i in live for _ in range(width)]
        prompts = [templates[i].format(" ".join(w)) for i, w in cand]
        imgs = sample_prompts(edited, prompts, [seeds[i] for i, _ in cand], sampling)
        sc = judged(judge, imgs)
        for k, (i, w) in enumerate(cand):
            if sc[k] > best_score[i]:
                best[i], best_score[i], best_img[i] = w, float(sc[k]), imgs[k]
        for i in live:
            queries[i] += width
            if best_score[i] >= sampling.threshold:
                done_at[i] = queries[i]
        report(sum(min(q, budget) for q in queries) / (n * budget))
    report(1.0)
    marks = sorted({1, *[b for b in (budget // 8, budget // 4, budget // 2) if b > 1], budget})
    curve = [(m, float(np.mean([d is not None and d <= m for d in done_at]))) for m in marks]
    success = [d is not None for d in done_at]
    return AttackResult(
        attack="word_search", target=target, budget=budget, asr=float(np.mean(success)), curve=curve,
        found=[t.format(" ".join(b)) for t, b, s in zip(templates, best, success, strict=True) if s],
        images=np.stack(best_img), scores=np.asarray(best_score), queries=int(sum(queries)),
        seconds=clock.elapsed, details={"width": width, "best_prompts": [t.format(" ".join(b))
                                                                        for t, b in zip(templates, best, strict=True)]},
    )
