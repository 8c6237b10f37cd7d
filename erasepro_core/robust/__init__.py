"""Robustness against the two threat models (docs/method.md, "Threat models"): T1 prompt attacks on the canvas
world (``t1``), closed-form concept expansion (``expansion``) and the canvas measurement of both (``measure``).
The prompt guard lives in :mod:`erasepro_core.guard`."""

from erasepro_core.robust.t1 import T1_CATEGORIES, T2_ATTACKS, attack_prompts, name_variants, word_search_names

__all__ = ["T1_CATEGORIES", "T2_ATTACKS", "attack_prompts", "name_variants", "word_search_names"]
