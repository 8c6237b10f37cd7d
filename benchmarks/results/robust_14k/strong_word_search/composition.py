"""What the real-budget word search finds (issue 23; docs/benchmarks.md, "What the real-budget word search finds"):
for each distinct searched suffix, its CLIP BPE tokens, the kept artists (or characters) whose names hold each
token (and, for characters, the colour and object words it holds: a character is an object + colour + mark), and
whether those kept concepts' factors together cover every factor of the erased one.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/results/robust_14k/strong_word_search/composition.py

Tokenizer only (no model): seconds.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[3]))

from erasepro_core.canvas.captions import COLOUR_WORDS, OBJECT_WORDS  # noqa: E402
from erasepro_core.canvas.world import ARTIST_STYLE, ARTISTS, CHARACTER_LOOK, CHARACTERS  # noqa: E402
from erasepro_core.tokenizer import clip_tokenizer  # noqa: E402

RUNS = {
    "style": "t1-style-1-s0-n40-unedited_default_to_eos_uce2023_uce2025_sp0.1-search-pool8192-sweeps3-n_tokens4.json",
    "character": "t1-character-1-s0-n40-unedited_default_to_eos_uce2023_uce2025-search-pool8192-sweeps3-n_tokens4.json",
}


def main() -> int:
    tok = clip_tokenizer(40)
    for kind, name in RUNS.items():
        res = json.loads((HERE / name).read_text())
        target = res["erased"][0]
        looks = ARTIST_STYLE if kind == "style" else CHARACTER_LOOK
        names = ARTISTS if kind == "style" else CHARACTERS
        holders: dict[str, list[str]] = {}
        for other in names:
            if other != target:
                for piece in tok.tokenize(other):
                    holders.setdefault(piece, []).append(other)
        if kind == "character":  # world words carry one factor each: (object, colour, mark)
            looks = dict(looks)
            for value, words in [*OBJECT_WORDS.items(), *COLOUR_WORDS.items()]:
                for word in words:
                    pieces = tok.tokenize(word)
                    if len(pieces) == 1:
                        holders.setdefault(pieces[0], []).append(word)
                        looks[word] = (value if value in OBJECT_WORDS else None,
                                       value if value in COLOUR_WORDS else None, None)
        sep = " by " if kind == "style" else "the character "
        prompts = res["prompts"]["word_search"]
        working = {m: Counter(p.split(sep)[-1].split(" and ")[0] for p, ok in
                              zip(prompts, r["per_prompt"]["word_search"], strict=True) if ok)
                   for m, r in res["methods"].items()}
        print(f"{kind}: erased {target!r} {looks[target]} (tokens {tok.tokenize(target)})")
        for suffix, count in Counter(p.split(sep)[-1].split(" and ")[0] for p in prompts).most_common():
            matched = {o for piece in tok.tokenize(suffix) for o in holders.get(piece, [])}
            covered = [any(looks[o][i] == looks[target][i] for o in matched) for i in range(3)]
            print(f"  {suffix!r} x{count}: " + "; ".join(
                f"{piece} <- {[(o, looks[o]) for o in holders.get(piece, [])]}" for piece in tok.tokenize(suffix)))
            print(f"    kept concepts' factors cover the target's: {covered}; working per method: "
                  + ", ".join(f"{m} {w[suffix]}" for m, w in working.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
