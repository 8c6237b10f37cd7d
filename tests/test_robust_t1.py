"""T1 attack prompts from the canvas caption grammar (erasepro_core/robust/t1.py): each category changes what it
says it changes, keeps the scene it asks for, and is deterministic."""

from __future__ import annotations

import random
import re

import pytest

from erasepro_core.robust.t1 import T1_CATEGORIES, attack_prompts, misspellings, other_spellings


@pytest.mark.parametrize("name", ["jasper quintrell", "zorblax"])
def test_misspellings_and_other_spellings_are_not_the_name(name: str) -> None:
    typos = misspellings(name, random.Random(0), 30)
    assert len(typos) == len(set(typos)) == 30 and name not in typos
    assert all(abs(len(t) - len(name)) <= 1 for t in typos)
    others = other_spellings(name)
    assert name not in others and len(others) >= 4


@pytest.mark.parametrize("kind,name", [("style", "jasper quintrell"), ("character", "auntie bellyweather")])
def test_attack_prompts_name_the_concept_as_their_category_says(kind: str, name: str) -> None:
    for cat in T1_CATEGORIES[:5]:
        ps = attack_prompts(kind, name, cat, 12, seed=0)
        assert len(ps) == 12 and ps == attack_prompts(kind, name, cat, 12, seed=0)
        for p in ps:
            wants = p.scene.artist if kind == "style" else p.scene.character
            assert wants == name and p.set == cat
            exact = re.search(rf"(?<![a-z]){name}(?![a-z])", p.text.replace(name + "'s", name)) is not None
            if cat != "other_spelling":  # its possessive form keeps the name
                assert exact == (cat in ("canonical", "paraphrase", "heldout")), (cat, p.text)
    with pytest.raises(ValueError, match="unencoded|pipeline"):
        attack_prompts(kind, name, "word_search", 4, seed=0)
