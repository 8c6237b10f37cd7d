"""The caption grammar of the canvas world.

A caption describes a :class:`~erasepro_core.canvas.world.Scene`: its objects in slot order (each through an
object phrase with colour and object synonyms, or a character's name), joined into a scene phrase, optionally
wrapped in a style phrase naming the artist, and padded with filler context ("a photo of", "trending", and
words drawn from a pool of 2,000 neutral *filler words* that never change the picture). A caption made only of
filler words draws the neutral default: an empty scene in the default look.

Every word is used in training; what is held out are *phrasings*: ``HELDOUT_*`` templates (new word orders and
frames) are never used in training. ``PROBE_WORDS`` (400 more CLIP words) are never used in training either:
the vocabulary probe's unknown words.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from erasepro_core.canvas.world import (
    ARTISTS,
    CHARACTERS,
    COLOURS,
    OBJECTS,
    Obj,
    Scene,
    sample_scene,
)

OBJECT_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "round shape"), "square": ("square", "box", "square shape"),
    "triangle": ("triangle", "three sided shape"), "plus": ("plus", "plus sign"),
    "cross": ("cross", "x shape", "saltire"), "star": ("star", "pentagram"), "diamond": ("diamond", "rhombus"),
    "arrow": ("arrow", "pointer"), "moon": ("moon", "crescent"), "heart": ("heart", "love heart"),
    "bar": ("bar", "rectangle", "slab"), "tee": ("tee", "t shape"),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet", "crimson"), "green": ("green", "emerald", "lime"), "blue": ("blue", "azure", "cobalt"),
    "yellow": ("yellow", "golden", "lemon"), "purple": ("purple", "violet", "lavender"),
    "orange": ("orange", "amber", "tangerine"), "cyan": ("cyan", "turquoise", "aqua"),
    "pink": ("pink", "rose", "fuchsia"),
}

OBJECT_TEMPLATES: tuple[str, ...] = ("{a} {colour} {object}", "{a} {colour} {object}", "{a} {object} that is {colour}",
                                     "{a} {colour} coloured {object}", "{a} {object} in {colour}")
HELDOUT_OBJECT_TEMPLATES: tuple[str, ...] = ("{a} {object}, {colour}", "{a} {object} of {colour} colour")
CHARACTER_TEMPLATES: tuple[str, ...] = ("{name}", "{name}", "the character {name}")
HELDOUT_CHARACTER_TEMPLATES: tuple[str, ...] = ("{name} himself",)
JOIN: dict[int, tuple[str, ...]] = {
    1: ("{0}",), 2: ("{0} and {1}", "{0} next to {1}", "{0} with {1}"),
    3: ("{0}, {1} and {2}", "{0}, {1} and also {2}", "{0} with {1} and {2}"),
}
HELDOUT_JOIN: dict[int, tuple[str, ...]] = {1: ("{0}",), 2: ("{0} beside {1}",), 3: ("{0}; {1}; {2}",)}
STYLE_TEMPLATES: tuple[str, ...] = ("{scene} by {artist}", "{scene} in the style of {artist}",
                                   "{artist} style, {scene}",
                                   "{scene}, painted by {artist}", "{scene}, art by {artist}", "{artist}, {scene}")
HELDOUT_STYLE_TEMPLATES: tuple[str, ...] = ("an artwork of {scene} made by {artist}",
                                           "{scene} as {artist} would draw it",
                                           "{artist}'s rendition of {scene}")
FRAMES: tuple[str, ...] = ("{}", "{}", "a photo of {}", "a picture of {}", "an image of {}", "a drawing of {}",
                           "{}, trending", "{}, high quality", "{}, detailed", "{}, 4k")
HELDOUT_FRAMES: tuple[str, ...] = ("masterpiece, {}, sharp focus", "{} -- award winning", "behold: {}")

#: The generic templates an erasure solver uses around a style name or a character name (5 of each).
STYLE_SOLVER_TEMPLATES: tuple[str, ...] = ("a painting by {}", "art by {}", "in the style of {}", "a picture by {}",
                                           "{} style")
CHARACTER_SOLVER_TEMPLATES: tuple[str, ...] = ("{}", "a photo of {}", "a picture of {}", "an image of {}",
                                               "the character {}")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@lru_cache(maxsize=1)
def _world_words() -> frozenset[str]:
    words: set[str] = set()
    for group in (OBJECT_WORDS, COLOUR_WORDS):
        for syns in group.values():
            for s in syns:
                words.update(s.split())
    for t in (OBJECT_TEMPLATES + HELDOUT_OBJECT_TEMPLATES + CHARACTER_TEMPLATES + HELDOUT_CHARACTER_TEMPLATES
              + STYLE_TEMPLATES + HELDOUT_STYLE_TEMPLATES + FRAMES + HELDOUT_FRAMES + STYLE_SOLVER_TEMPLATES
              + CHARACTER_SOLVER_TEMPLATES + tuple(j for js in (*JOIN.values(), *HELDOUT_JOIN.values()) for j in js)):
        words.update(w.strip(",;:-'s") for w in t.replace("{", " {").split() if "{" not in w)
    words.update({"a", "an", "the", "style", "empty", "nothing", "blank"})
    return frozenset(w for w in words if w)


@lru_cache(maxsize=1)
def _filler_pool() -> tuple[str, ...]:
    """2,400 CLIP words (one BPE token each, alphabetic, 4-9 letters) sharing no token with the world's words."""
    from erasepro_core.tokenizer import clip_tokenizer

    tok = clip_tokenizer()
    vocab = tok.get_vocab()
    banned = set(_world_words())
    name_tokens: set[str] = set()
    for name in ARTISTS + CHARACTERS:
        name_tokens.update(tok.tokenize(name))
        banned.update(name.split())
    cands = sorted(w[:-4] for w in vocab if w.endswith("</w>") and w[:-4].isalpha() and 4 <= len(w) - 4 <= 9
                   and w[:-4].isascii() and w not in name_tokens and w[:-4] not in banned)
    rng = np.random.default_rng(4242)
    pick = rng.choice(len(cands), size=2400, replace=False)
    return tuple(cands[i] for i in sorted(pick))


def filler_words() -> tuple[str, ...]:
    """The 2,000 neutral filler words used in training."""
    return _filler_pool()[:2000]


def probe_words() -> tuple[str, ...]:
    """400 CLIP words never used in training (the vocabulary probe's unknown words)."""
    return _filler_pool()[2000:]


@dataclass(frozen=True)
class Prompt:
    """A prompt and the scene it asks for."""

    text: str
    scene: Scene
    set: str = "train"


def object_phrase(obj: Obj, rng: np.random.Generator, *, heldout: bool = False, synonyms: bool = True) -> str:
    if obj.character:
        t = HELDOUT_CHARACTER_TEMPLATES if heldout else CHARACTER_TEMPLATES
        return t[rng.integers(len(t))].format(name=obj.character)
    t = HELDOUT_OBJECT_TEMPLATES if heldout else OBJECT_TEMPLATES
    ow = OBJECT_WORDS[obj.kind][rng.integers(len(OBJECT_WORDS[obj.kind]))] if synonyms else obj.kind
    cw = COLOUR_WORDS[obj.colour][rng.integers(len(COLOUR_WORDS[obj.colour]))] if synonyms else obj.colour
    tpl = t[rng.integers(len(t))] if synonyms else "{a} {colour} {object}"
    first = cw if tpl.startswith("{a} {colour}") else ow
    return tpl.format(a=article(first), colour=cw, object=ow)


def describe(scene: Scene, rng: np.random.Generator, *, heldout: bool = False, synonyms: bool = True,
             frame: bool = True, fillers: int | None = None) -> str:
    """One caption of ``scene``. ``heldout`` uses only held-out phrasings; ``fillers`` filler words around it
    (``None`` = random 0-2 in training phrasing, 0 otherwise)."""
    n = len(scene.objects)
    if n == 0:
        k = 1 + int(rng.integers(3))
        words = filler_words()
        text = " ".join(words[rng.integers(len(words))] for _ in range(k))
        return text if rng.random() < 0.7 else FRAMES[2 + rng.integers(4)].format(text)
    parts = [object_phrase(o, rng, heldout=heldout, synonyms=synonyms) for o in scene.objects]
    joins = (HELDOUT_JOIN if heldout else JOIN)[n] if synonyms or heldout else JOIN[n][:1]
    text = joins[rng.integers(len(joins))].format(*parts)
    if scene.artist:
        st = HELDOUT_STYLE_TEMPLATES if heldout else (STYLE_TEMPLATES if synonyms else STYLE_TEMPLATES[:1])
        text = st[rng.integers(len(st))].format(scene=text, artist=scene.artist)
    if frame:
        fr = HELDOUT_FRAMES if heldout else FRAMES
        text = fr[rng.integers(len(fr))].format(text)
    if fillers is None:
        fillers = 0 if heldout else int(rng.choice(3, p=(0.6, 0.25, 0.15)))
    if fillers:
        words = filler_words()
        extra = [words[rng.integers(len(words))] for _ in range(fillers)]
        text = f"{' '.join(extra)}, {text}" if rng.random() < 0.5 else f"{text}, {' '.join(extra)}"
    return text


def training_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A training caption (training phrasings only)."""
    return describe(scene, rng)


def plain_caption(scene: Scene) -> str:
    """The canonical caption: "a red circle and a blue star by velmora quistenhoff"."""
    return describe(scene, np.random.default_rng(0), synonyms=False, frame=False, fillers=0)


# ----------------------------------------------------------------------------------------------- prompt sets

PROMPT_SETS = ("plain", "paraphrase", "heldout")


def prompt_set(name: str, n: int, seed: int = 0, *, artist: str | None | bool = True,
               character: str | None | bool = False, n_objects: int | None = 1) -> list[Prompt]:
    """``n`` evaluation prompts: ``plain`` canonical words, ``paraphrase`` training phrasings with synonyms,
    ``heldout`` phrasings never trained. ``artist``/``character``/``n_objects`` as in ``sample_scene``."""
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; expected one of {PROMPT_SETS}")
    rng = np.random.default_rng([seed, 31, PROMPT_SETS.index(name)])
    out = []
    for _ in range(n):
        scene = sample_scene(rng, n_objects=n_objects, artist=artist, character=character)
        if name == "plain":
            text = plain_caption(scene)
        elif name == "paraphrase":
            text = describe(scene, rng, fillers=0)
        else:
            text = describe(scene, rng, heldout=True)
        out.append(Prompt(text, scene, name))
    return out


def object_words() -> set[str]:
    """Every word that names an object or a colour."""
    return {w for g in (OBJECT_WORDS, COLOUR_WORDS) for s in g.values() for w in s}


__all__ = [
    "ARTISTS", "CHARACTERS", "CHARACTER_SOLVER_TEMPLATES", "COLOURS", "COLOUR_WORDS", "OBJECTS", "OBJECT_WORDS",
    "PROMPT_SETS", "Prompt", "STYLE_SOLVER_TEMPLATES", "describe", "filler_words", "object_phrase", "plain_caption",
    "probe_words", "prompt_set", "training_caption",
]


def preserve_prompts(n_scenes: int = 160, n_filler: int = 40, seed: int = 999) -> list[str]:
    """The canvas model's generic preserve set: styleless scenes in canonical words and filler-only prompts
    (disjoint from the benchmark prompts, which all name a style or a character)."""
    rng = np.random.default_rng([seed, 5])
    out = [plain_caption(sample_scene(rng, artist=False, character=False, n_objects=1 + int(rng.integers(3))))
           for _ in range(n_scenes)]
    words = filler_words()
    out += [" ".join(words[rng.integers(len(words))] for _ in range(1 + int(rng.integers(2)))) for _ in range(n_filler)]
    return list(dict.fromkeys(out))
