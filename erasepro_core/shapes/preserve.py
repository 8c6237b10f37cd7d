"""The shapes model's preserve set (shipped as ``erasepro_preserve.txt`` beside its weights).

Generic everyday prompts mean nothing to a text encoder that only knows shapes, so the bundled model ships
prompts of its own world: bare attribute phrases ("red circle", "small blue square", "outlined green
cross") in *canonical* words only. Synonyms are left out on purpose: erasure drops the preserve prompts that
name a target, but cannot know that "crimson disc" means "red circle"; a preserved synonym of the target
protects the target itself (measured: with every synonym pair preserved, circle→square left the circle on
100% of plain prompts; with canonical words only, see docs/benchmarks.md). Only the paraphrase template
"{colour} {shape}" can produce the same text as a preserve prompt; the erasure benchmark drops evaluation
prompts that coincide with one, so the two stay disjoint.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

from erasepro_core.shapes.captions import COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS, STYLE_WORDS, fill

HEADER = "# Preserve set of the shapes world: bare attribute phrases in canonical words (see shapes/preserve.py)."


def shapes_preserve_prompts() -> list[str]:
    """Every shape × colour in canonical words, plain, small, large and outlined (80 prompts)."""
    out: list[str] = []
    for shape, colour in product(SHAPE_WORDS, COLOUR_WORDS):
        s_word, c_word = SHAPE_WORDS[shape][0], COLOUR_WORDS[colour][0]
        out.append(fill("{desc}", s_word, c_word))
        out += [fill("{desc}", s_word, c_word, size=SIZE_WORDS[size][0]) for size in SIZE_WORDS]
        out.append(fill("{desc}", s_word, c_word, style=STYLE_WORDS["outlined"][0]))
    return out


def write_preserve_file(model_dir: str | Path) -> Path:
    path = Path(model_dir) / "erasepro_preserve.txt"
    path.write_text(HEADER + "\n" + "\n".join(shapes_preserve_prompts()) + "\n", encoding="utf-8")
    return path
