"""Attacks on an erased model: how hard is it to bring the concept back? One registry, torch-free.

Each attack is ``attack(edited, unedited, target, judge, budget, seed, *, templates, ...) -> AttackResult``:
``edited``/``unedited`` are diffusers pipelines, ``judge`` maps uint8 images to P(target | image) (a world
supplies it, e.g. :func:`erasepro_core.shapes.judge.attribute_judge`: attacks know no world),
``templates`` are harmless prompts with ``{}`` where the attack puts its words/tokens. Every attack is
bounded (images, steps, wall-clock ``Sampling.max_seconds``), deterministic given ``seed`` and reports
progress through ``progress(stage, fraction)``.

Adding an attack: a module with its function and one :func:`register` line below, which names the function
(imported on first call: attacks need torch) and the range of budgets a REST request may ask for. Everything
else reads :data:`ATTACKS`: :func:`~erasepro_core.attacks.evaluate.evaluate_robustness`, the REST request's
accepted attacks and ranges (:func:`budgets`, through :mod:`erasepro_jobs.evaluations`) and the benchmarks.
Importing this package is torch-free (the REST front end validates budgets with it); the attack functions and
helpers below load on first use (no module shares a name with a function, so a lazy name is never shadowed).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from erasepro_core.lazy import lazy_names

MAX_TARGETS = 16  # an evaluation attacks at most this many targets: a bound on its time


@dataclass(frozen=True)
class Attack:
    """An attack: its ``name``, where its function lives (``"module:function"``), the budgets ``lo..hi`` (both
    inclusive) a REST request may ask for and what one unit of budget is."""

    name: str
    function: str
    budget: tuple[int, int]
    unit: str

    def load(self) -> Any:
        module, _, attr = self.function.partition(":")
        return getattr(importlib.import_module(module), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.load()(*args, **kwargs)


ATTACKS: dict[str, Attack] = {}


def register(attack: Attack) -> None:
    """Make ``attack`` known by its name (replacing one of that name)."""
    lo, hi = attack.budget
    if not 0 <= lo <= hi:
        raise ValueError(f"attack {attack.name!r}: budget range {attack.budget} is not 0 <= lo <= hi")
    ATTACKS[attack.name] = attack


def budgets() -> dict[str, tuple[int, int]]:
    """Attack name -> its budget range ``(lo, hi)``, for every registered attack."""
    return {name: a.budget for name, a in ATTACKS.items()}


register(Attack("vocabulary", "erasepro_core.attacks.vocabulary:vocabulary_probe", (1, 2000), "probe prompts"))
register(Attack("word_search", "erasepro_core.attacks.search:word_search", (1, 128), "queries per instance"))
register(Attack("soft_token", "erasepro_core.attacks.soft_prompt:soft_token", (0, 200), "Adam steps"))
register(Attack("concept_direction", "erasepro_core.attacks.direction:concept_direction", (1, 8), "strengths tried"))
register(Attack("closed_form", "erasepro_core.attacks.context_solve:closed_form", (1, 8), "ridge values tried"))

__getattr__ = lazy_names(__name__, {
    "erasepro_core.attacks.context_solve": ("closed_form", "kv_grams", "reproduce_kv"),
    "erasepro_core.attacks.direction": ("concept_direction", "concept_direction_vector"),
    "erasepro_core.attacks.evaluate": ("evaluate_robustness",),
    "erasepro_core.attacks.result": ("AttackResult", "JudgeFn", "Progress"),
    "erasepro_core.attacks.sampling": ("AttackBudgetError", "Sampling"),
    "erasepro_core.attacks.soft_prompt": ("soft_token",),
    "erasepro_core.attacks.vocabulary": ("probe_words", "vocabulary_probe"),
    "erasepro_core.attacks.search": ("word_search",),
})

__all__ = ["ATTACKS", "MAX_TARGETS", "Attack", "budgets", "register", *__getattr__.names]
