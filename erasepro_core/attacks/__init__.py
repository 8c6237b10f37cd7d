"""Attacks on an erased model: how hard is it to bring the concept back?

Each attack is ``attack(edited, unedited, target, judge, budget, seed, *, templates, ...) -> AttackResult``:
``edited``/``unedited`` are diffusers pipelines, ``judge`` maps uint8 images to P(target | image) (a world
supplies it, e.g. :func:`erasepro_core.shapes.judge.attribute_judge`: attacks know no world),
``templates`` are harmless prompts with ``{}`` where the attack puts its words/tokens. Every attack is
bounded (images, steps, wall-clock ``Sampling.max_seconds``), deterministic given ``seed`` and reports
progress through ``progress(stage, fraction)``.
"""

from erasepro_core.attacks.closed_form import closed_form, kv_grams, reproduce_kv
from erasepro_core.attacks.direction import concept_direction, concept_direction_vector
from erasepro_core.attacks.evaluate import evaluate_robustness
from erasepro_core.attacks.result import AttackResult, JudgeFn, Progress
from erasepro_core.attacks.sampling import AttackBudgetError, Sampling
from erasepro_core.attacks.soft_token import soft_token
from erasepro_core.attacks.vocabulary import probe_words, vocabulary_probe
from erasepro_core.attacks.word_search import word_search

ATTACKS = {
    "vocabulary": vocabulary_probe,
    "word_search": word_search,
    "soft_token": soft_token,
    "concept_direction": concept_direction,
    "closed_form": closed_form,
}

__all__ = [
    "ATTACKS", "AttackBudgetError", "AttackResult", "JudgeFn", "Progress", "Sampling",
    "closed_form", "concept_direction", "concept_direction_vector", "evaluate_robustness", "kv_grams",
    "probe_words", "reproduce_kv", "soft_token", "vocabulary_probe", "word_search",
]
