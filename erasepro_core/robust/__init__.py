"""Robustness against the two threat models (docs/method.md, "Threat models"): the attacks' names (``names``,
torch-free), T1 prompt attacks on the canvas world (``t1``), closed-form concept expansion (``expansion``), the
canvas measurement of both (``measure``) and the threat-model evaluation (``threat``). The prompt guard lives in
:mod:`erasepro_core.guard`. Importing the package is torch-free: the functions load on first use."""

from erasepro_core.lazy import lazy_names
from erasepro_core.robust.names import T1_ATTACKS, T1_CATEGORIES, T2_ATTACKS, THREAT_MODELS

__getattr__ = lazy_names(__name__, {"erasepro_core.robust.t1": ("attack_prompts", "name_variants",
                                                                "word_search_names")})

__all__ = ["T1_ATTACKS", "T1_CATEGORIES", "T2_ATTACKS", "THREAT_MODELS", "attack_prompts", "name_variants",
           "word_search_names"]
