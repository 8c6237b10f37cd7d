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


def test_the_guard_benchmark_reads_which_attack_prompts_work(tmp_path) -> None:
    """benchmarks/robust_guard.py --effective: a prompt works when the unedited model drew the concept on any draw."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "robust_guard.py"
    spec = importlib.util.spec_from_file_location("robust_guard", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = {"kind": "style", "concepts": 1, "prompts": {"paraphrase": ["a", "b", "a"], "misspelling": ["c"]},
           "methods": {"unedited": {"per_prompt": {"paraphrase": [0, 0, 1], "misspelling": [0]}}}}
    (tmp_path / "t1.json").write_text(json.dumps(res))
    works = mod.effective_prompts([str(tmp_path / "t1.json")])
    assert works == {("style", 1, "paraphrase"): {"a": True, "b": False}, ("style", 1, "misspelling"): {"c": False}}


def test_the_word_search_budget_is_parsed_or_refused() -> None:
    from erasepro_core.robust.t1 import parse_search

    assert parse_search("") is None
    assert parse_search("pool=8192,sweeps=3,n_tokens=4") == {"pool": 8192, "sweeps": 3, "n_tokens": 4}
    for bad in ("pool", "pool=0", "pool=-1", "pool=x", "depth=2"):
        with pytest.raises(ValueError, match="key=N"):
            parse_search(bad)
