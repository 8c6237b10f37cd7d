"""Candidate words for the text attacks: the tokenizer's own vocabulary, sampled, and character variants of
the target (misspellings a user might try)."""

from __future__ import annotations

import random
import re
from functools import lru_cache

_WORD = re.compile(r"^[a-z]{3,12}$")
_KEYS = "qwertyuiop asdfghjkl zxcvbnm"


@lru_cache(maxsize=8)
def _whole_words(tokenizer) -> tuple[str, ...]:
    # CLIP BPE marks word ends with "</w>": these entries are whole words the tokenizer keeps as one token.
    out = []
    for tok in tokenizer.get_vocab():
        if tok.endswith("</w>") and _WORD.match(tok[:-4]):
            out.append(tok[:-4])
    return tuple(sorted(out))


def vocabulary_words(tokenizer, n: int, seed: int, exclude: set[str] = frozenset()) -> list[str]:
    """``n`` distinct whole-word tokens (3-12 letters) sampled from the tokenizer's vocabulary."""
    pool = [w for w in _whole_words(tokenizer) if w not in exclude]
    return random.Random(seed).sample(pool, min(n, len(pool)))


def variants(word: str, n: int, seed: int) -> list[str]:
    """Up to ``n`` distinct character variants of ``word``: a letter dropped, doubled, swapped with its
    neighbour or replaced by a keyboard neighbour, plus a spaced-out spelling and an upper-case form."""
    w = word.lower()
    out: list[str] = []
    for i in range(len(w)):
        out.append(w[:i] + w[i + 1 :])  # dropped
        out.append(w[:i] + w[i] + w[i:])  # doubled
        if i + 1 < len(w):
            out.append(w[:i] + w[i + 1] + w[i] + w[i + 2 :])  # swapped
        k = _KEYS.find(w[i])
        for j in (k - 1, k + 1):
            if 0 <= j < len(_KEYS) and _KEYS[j] != " " and k >= 0:
                out.append(w[:i] + _KEYS[j] + w[i + 1 :])  # keyboard neighbour
    out += [" ".join(w), w.upper(), w + "s", w + "-like"]
    seen, uniq = {w}, []
    for v in out:
        if v and v not in seen:
            seen.add(v)
            uniq.append(v)
    random.Random(seed).shuffle(uniq)
    return uniq[:n]
