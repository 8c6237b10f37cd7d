"""The caption grammar of the shapes world.

A caption names a shape and a colour, optionally a size and a style, through a *template*. Words have
synonyms ("scarlet disc"), and every synonym is used in training: the text encoder can only know words
it was trained on. What is held out are *phrasings*: ``HELDOUT_TEMPLATES`` (new word orders and filler
combinations over the training vocabulary) are never used in training and serve only for evaluation.

Template families (each a tuple of format strings over ``{a}`` = "a"/"an", ``{desc}`` = the attribute
phrase such as "small outlined red circle", ``{shape}``, ``{colour}`` and ``{mods}`` = size/style words):

* ``PLAIN_TEMPLATES``      -- "a red circle"                      (training)
* ``COMPLEX_TEMPLATES``    -- "a photo of a red circle, trending" (training; filler context)
* ``PARAPHRASE_TEMPLATES`` -- "a circle that is red"              (training; other word orders)
* ``HELDOUT_TEMPLATES``    -- evaluation only, never in training
* ``SOLVER_TEMPLATES``     -- the generic templates an erasure solver uses ("a photo of {}"); the
  evaluation prompt sets from :func:`prompt_set` never contain a prompt these produce from a concept word.

Style convention: a caption without a style word means *filled* (as a prompt without an art style means
the default look); "outlined"/"hollow" ask for the outlined style. A caption without a size word leaves
the size free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from erasepro_core.shapes.world import COLOURS, SHAPES, SIZES, STYLES, Attributes

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "round shape"),
    "square": ("square", "box", "square shape"),
    "triangle": ("triangle", "triangular shape", "three sided shape"),
    "cross": ("cross", "plus sign", "plus shape"),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet", "crimson"),
    "green": ("green", "emerald", "lime"),
    "blue": ("blue", "azure", "cobalt"),
    "yellow": ("yellow", "golden", "lemon"),
    "purple": ("purple", "violet", "magenta"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny", "little"),
    "large": ("large", "big", "huge"),
}
STYLE_WORDS: dict[str, tuple[str, ...]] = {
    "filled": ("filled", "solid"),
    "outlined": ("outlined", "hollow"),
}
#: Attribute name -> value -> words (the first word is the canonical one).
WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": SHAPE_WORDS,
    "colour": COLOUR_WORDS,
    "size": SIZE_WORDS,
    "style": STYLE_WORDS,
}

PLAIN_TEMPLATES: tuple[str, ...] = (
    "{a} {desc}",
    "{desc}",
)
COMPLEX_TEMPLATES: tuple[str, ...] = (
    "{a} {desc}, high quality, detailed",
    "a photo of {a} {desc}, trending",
    "{a} {desc} on a black background",
    "a picture of {a} {desc}, sharp focus",
    "an image of {a} {desc}, 4k, masterpiece",
    "{a} {desc}, centered, high quality",
)
PARAPHRASE_TEMPLATES: tuple[str, ...] = (
    "{a} {mods}{shape} that is {colour}",
    "{a} {mods}{shape} in {colour}",
    "{a} {mods}{colour} coloured {shape}",
    "{colour} {mods}{shape}",
)
TRAIN_TEMPLATES: tuple[str, ...] = PLAIN_TEMPLATES + COMPLEX_TEMPLATES + PARAPHRASE_TEMPLATES
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "a detailed picture of {a} {desc}, 4k",
    "masterpiece, {a} {desc}, trending, sharp focus",
    "a high quality image of {a} {desc}",
    "{a} {mods}{shape}, {colour}, on a black background",
    "{colour}, {mods}{shape}, detailed",
    "a photo of {a} {mods}{shape} in {colour}, centered",
)
SOLVER_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a {}",
    "a photo of a {}",
    "an image of a {}",
    "a picture of a {}",
    "a photo of {}",
)
PROMPT_SETS: tuple[str, ...] = ("plain", "complex", "paraphrase", "heldout")


def article(word: str) -> str:
    """'a' or 'an' for the word that follows."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def fill(template: str, shape: str, colour: str, size: str | None = None, style: str | None = None) -> str:
    """Fill a template with *words* (already chosen synonyms); size/style words may be None."""
    mods = "".join(f"{w} " for w in (size, style) if w)
    desc = f"{mods}{colour} {shape}"
    text = template.format(a="\x00", desc=desc, shape=shape, colour=colour, mods=mods)
    words = text.split()
    for i, w in enumerate(words):
        if w == "\x00":
            words[i] = article(words[i + 1]) if i + 1 < len(words) else "a"
    return " ".join(words)


@dataclass(frozen=True)
class Prompt:
    """A caption and what it asks for; ``size``/``style`` are None where the caption leaves them free."""

    text: str
    shape: str
    colour: str
    size: str | None
    style: str
    set: str = "train"


def caption(
    attrs: Attributes,
    rng: np.random.Generator,
    templates: tuple[str, ...] = TRAIN_TEMPLATES,
    *,
    synonyms: bool = True,
    p_size: float = 0.6,
    p_filled_word: float = 0.3,
) -> Prompt:
    """A random caption for an image with ``attrs`` (consistent with it: a size word names its size, an
    omitted style word means filled, so outlined images always get a style word)."""

    def word(kind: str, value: str) -> str:
        choices = WORDS[kind][value]
        return choices[rng.integers(len(choices))] if synonyms else choices[0]

    size = word("size", attrs.size) if rng.random() < p_size else None
    if attrs.style == "outlined" or rng.random() < p_filled_word:
        style = word("style", attrs.style)
    else:
        style = None
    template = templates[rng.integers(len(templates))]
    text = fill(template, word("shape", attrs.shape), word("colour", attrs.colour), size, style)
    return Prompt(text, attrs.shape, attrs.colour, attrs.size if size else None, attrs.style)


def prompt_set(name: str, seed: int = 0, per_combo: int = 1) -> list[Prompt]:
    """An evaluation prompt set: ``per_combo`` prompts for every shape x colour pair (20 pairs).

    * ``plain``      -- "a red circle": canonical words, plain templates, no size/style words;
    * ``complex``    -- complex (filler) training templates, canonical words, random size/style words;
    * ``paraphrase`` -- synonyms in paraphrase templates, random size/style words;
    * ``heldout``    -- HELDOUT_TEMPLATES (never trained), random synonyms and size/style words.
    """
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; expected one of {PROMPT_SETS}")
    rng = np.random.default_rng([PROMPT_SETS.index(name), seed])
    out: list[Prompt] = []
    for shape in SHAPES:
        for colour in COLOURS:
            for _ in range(per_combo):
                size = SIZES[rng.integers(2)]
                style = STYLES[rng.integers(2)]
                attrs = Attributes(shape, colour, size, style)
                if name == "plain":
                    p = caption(Attributes(shape, colour, size, "filled"), rng, ("{a} {desc}",),
                                synonyms=False, p_size=0.0, p_filled_word=0.0)
                elif name == "complex":
                    p = caption(attrs, rng, COMPLEX_TEMPLATES, synonyms=False)
                elif name == "paraphrase":
                    p = caption(attrs, rng, PARAPHRASE_TEMPLATES, synonyms=True)
                else:
                    p = caption(attrs, rng, HELDOUT_TEMPLATES, synonyms=True)
                out.append(Prompt(p.text, p.shape, p.colour, p.size, p.style, name))
    return out


def solver_prompts(concept: str) -> list[str]:
    """The generic prompts an erasure solver builds for one concept word."""
    return [t.format(concept) for t in SOLVER_TEMPLATES]


def all_words() -> set[str]:
    """Every attribute word the grammar can emit."""
    return {w for table in WORDS.values() for words in table.values() for w in words}


__all__ = [
    "COLOUR_WORDS", "COMPLEX_TEMPLATES", "HELDOUT_TEMPLATES", "PARAPHRASE_TEMPLATES", "PLAIN_TEMPLATES",
    "PROMPT_SETS", "Prompt", "SHAPE_WORDS", "SIZE_WORDS", "SOLVER_TEMPLATES", "STYLE_WORDS",
    "TRAIN_TEMPLATES", "WORDS", "all_words", "article", "caption", "fill", "prompt_set", "solver_prompts",
]
