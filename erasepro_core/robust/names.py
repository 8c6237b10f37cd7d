"""The names of the two threat models' attacks (docs/method.md, "Threat models"), torch-free: the REST front end
validates requests with them and the evaluation reports under them.

* ``T1_CATEGORIES``: the text-only prompt sets of :mod:`erasepro_core.robust.t1`, ``canonical`` (the reference
  row: the plain caption the erasure was tested on) first, then the attacks proper (``T1_ATTACKS``).
* ``T2_ATTACKS``: the embedding attacks, names in :data:`erasepro_core.attacks.ATTACKS`.
"""

from __future__ import annotations

THREAT_MODELS: tuple[str, ...] = ("T1", "T2")
T1_CATEGORIES: tuple[str, ...] = ("canonical", "paraphrase", "heldout", "misspelling", "other_spelling",
                                  "word_search")
#: The attack categories proper (``canonical`` is the reference row).
T1_ATTACKS: tuple[str, ...] = T1_CATEGORIES[1:]
T2_ATTACKS: tuple[str, ...] = ("soft_token", "concept_direction", "closed_form")

__all__ = ["T1_ATTACKS", "T1_CATEGORIES", "T2_ATTACKS", "THREAT_MODELS"]
