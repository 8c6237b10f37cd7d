"""The canvas world: scenes of 1-3 coloured objects, drawn in one of many named styles, with named characters.

A *scene* is a list of objects (kind, colour, optional character mark) laid out in caption order on fixed slots
(small jitter), plus a *style*: a deterministic rendering of the whole image from three factors --
background (6) x stroke (sharp fill / outline / blurred fill) x texture over the whole image (none, stripes,
checker, diagonal hatching). The default look (no style named) is ``black / fill / none``; each of the 64
named styles ("artists") is another factor combination, so styles share factors as real artists share traits.
A *character* (the analogue of a celebrity or a brand) is a fixed object + colour + mark.

Everything is deterministic given a seed; ``render(scene)`` draws at 4x and box-downsamples (anti-aliased).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RESOLUTION = 32
_SS = 4  # supersampling factor

OBJECTS: tuple[str, ...] = (
    "circle", "square", "triangle", "plus", "cross", "star", "diamond", "arrow", "moon", "heart", "bar", "tee",
)
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink")
RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (40, 190, 50), "blue": (40, 80, 245), "yellow": (245, 225, 30),
    "purple": (150, 50, 215), "orange": (250, 135, 15), "cyan": (30, 215, 225), "pink": (250, 135, 200),
}
BACKGROUNDS: tuple[str, ...] = ("black", "white", "grey", "navy", "cream", "maroon")
BG_RGB: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0), "white": (235, 235, 235), "grey": (115, 115, 115), "navy": (15, 25, 85),
    "cream": (235, 220, 180), "maroon": (85, 20, 35),
}
STROKES: tuple[str, ...] = ("fill", "outline", "blur")
TEXTURES: tuple[str, ...] = ("none", "stripes", "checker", "hatch")
MARKS: tuple[str, ...] = ("dot", "eyes", "band", "halo")

#: The look of an image that names no style.
DEFAULT_STYLE: tuple[str, str, str] = ("black", "fill", "none")

# Made-up artist names: each several CLIP BPE tokens, as real artist names are. Fixed forever (the model
# is trained on them); the order defines style ids.
ARTISTS: tuple[str, ...] = (
    "velmora quistenhoff", "dravik olunsen", "tessaly brunwick", "oskarin voltaire", "mirela castavon",
    "jorund pelliker", "anselka virtue", "corvin maddoxley", "lunetta skarsvik", "bram ottoline",
    "ilvana drescoe", "peregrin ashcombe", "sorvette lindqvar", "haldor frenzini", "kasimir olbright",
    "zenobia waltrop", "quillon marchetti", "fennick dorvale", "rosalind tarkwell", "evander plumtree",
    "marisol quenby", "tobiah vanterpool", "ysolde crannach", "lucan feverby", "odalys pennington",
    "ferdinand yarrowby", "celestine moravik", "gideon holloway", "amaranth delcourt", "wilhelmina sporn",
    "benedikt arkwright", "solenne fairweather", "caspian thornquist", "imogen bellweather", "leopold mariscal",
    "verena kolbrandt", "ottavio greenhalgh", "priscilla vandermeer", "ramsay ellingboe", "theodora quarles",
    "ulrich fenwright", "adelheid morcombe", "barnaby lichtfeld", "clementine oakhurst", "dietrich pallister",
    "esmeralda vinterberg", "fitzgerald hornsby", "gwendolyn rasmuson", "horatio blackwood", "isadora penhallow",
    "jasper quintrell", "katarina wolstencroft", "lysander abernathy", "magdalena ferreira", "nikolai trevanion",
    "ophelia grimsditch", "percival eastwick", "rowena calloway", "sebastian moorcroft", "tabitha winterbourne",
    "umberto falconer", "valentina ashdown", "winifred colquhoun", "xavier penderel",
)
# The style of each artist: (background, stroke, texture) -- a fixed permutation of the non-default combinations.
_COMBOS = [(b, s, t) for b in BACKGROUNDS for s in STROKES for t in TEXTURES if (b, s, t) != DEFAULT_STYLE]
_PERM = np.random.default_rng(20261207).permutation(len(_COMBOS))
ARTIST_STYLE: dict[str, tuple[str, str, str]] = {a: _COMBOS[int(_PERM[i])] for i, a in enumerate(ARTISTS)}
#: Style ids: 0 = default, 1..64 = ARTISTS in order; any other factor combination is "other" (-1).
STYLE_IDS: dict[tuple[str, str, str], int] = {
    DEFAULT_STYLE: 0, **{ARTIST_STYLE[a]: i + 1 for i, a in enumerate(ARTISTS)},
}

CHARACTERS: tuple[str, ...] = (
    "zorblax", "captain plimbo", "mister quozzle", "lady fenwhistle", "grumbleton", "professor wuggins",
    "snorkelbeth", "baron vexmoor", "princess oolavee", "doctor spindlewick", "tinkerbrass", "madame zephyrine",
    "sir bumblecroft", "kazoodle", "queen marmalith", "old man trevorax", "pipwhistle", "general glomm",
    "auntie bellyweather", "the great fizzbang",
)
_CHAR_RNG = np.random.default_rng(777)
_char_triples: list[tuple[str, str, str]] = []
while len(_char_triples) < len(CHARACTERS):
    t = (OBJECTS[_CHAR_RNG.integers(len(OBJECTS))], COLOURS[_CHAR_RNG.integers(len(COLOURS))],
         MARKS[_CHAR_RNG.integers(len(MARKS))])
    if t not in _char_triples:
        _char_triples.append(t)
#: character name -> (object, colour, mark)
CHARACTER_LOOK: dict[str, tuple[str, str, str]] = dict(zip(CHARACTERS, _char_triples, strict=True))

# Slots per object count (centre x, centre y, radius) in output pixels; objects take slots in caption order.
SLOTS: dict[int, tuple[tuple[float, float, float], ...]] = {
    1: ((16.0, 16.0, 9.0),),
    2: ((8.5, 16.0, 6.5), (23.5, 16.0, 6.5)),
    3: ((8.5, 10.0, 5.6), (23.5, 10.0, 5.6), (16.0, 23.5, 5.6)),
}


@dataclass(frozen=True)
class Obj:
    """One object of a scene; ``character`` names the character it draws (then kind/colour are its look)."""

    kind: str
    colour: str
    character: str | None = None

    @property
    def mark(self) -> str | None:
        return CHARACTER_LOOK[self.character][2] if self.character else None


@dataclass(frozen=True)
class Scene:
    """What an image shows: objects in slot order and the style (``None`` = default look)."""

    objects: tuple[Obj, ...] = field(default_factory=tuple)
    artist: str | None = None

    def __post_init__(self) -> None:
        if len(self.objects) > 3:
            raise ValueError("a scene holds at most 3 objects")
        kinds = [o.kind for o in self.objects]
        if len(set(kinds)) != len(kinds):
            raise ValueError("a scene holds each object kind at most once")
        for o in self.objects:
            if o.kind not in OBJECTS or o.colour not in COLOURS:
                raise ValueError(f"unknown object {o}")
            if o.character is not None and CHARACTER_LOOK[o.character][:2] != (o.kind, o.colour):
                raise ValueError(f"{o.character} is a {CHARACTER_LOOK[o.character][:2]}")
        if self.artist is not None and self.artist not in ARTIST_STYLE:
            raise ValueError(f"unknown artist {self.artist!r}")

    @property
    def style(self) -> tuple[str, str, str]:
        return ARTIST_STYLE[self.artist] if self.artist else DEFAULT_STYLE

    @property
    def style_id(self) -> int:
        return STYLE_IDS[self.style]

    @property
    def character(self) -> str | None:
        return next((o.character for o in self.objects if o.character), None)


def character_object(name: str) -> Obj:
    kind, colour, _ = CHARACTER_LOOK[name]
    return Obj(kind, colour, name)


# ----------------------------------------------------------------------------------------------- geometry


def _star(cx: float, cy: float, r: float, n: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    pts = []
    for i in range(2 * n):
        rr = r if i % 2 == 0 else r * inner
        a = -math.pi / 2 + i * math.pi / n
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if kind == "square":
        h = r * 0.82
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if kind == "triangle":
        c = cy + r * 0.15
        angles = (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        return [(cx + r * 1.1 * math.cos(a), c + r * 1.1 * math.sin(a)) for a in angles]
    if kind == "plus":
        a, w = r, r * 0.34
        return [(cx - w, cy - a), (cx + w, cy - a), (cx + w, cy - w), (cx + a, cy - w), (cx + a, cy + w),
                (cx + w, cy + w), (cx + w, cy + a), (cx - w, cy + a), (cx - w, cy + w), (cx - a, cy + w),
                (cx - a, cy - w), (cx - w, cy - w)]
    if kind == "cross":  # the plus rotated by 45 degrees
        pts = _polygon("plus", 0.0, 0.0, r * 1.05)
        c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts or []]
    if kind == "star":
        return _star(cx, cy, r * 1.1)
    if kind == "diamond":
        return [(cx, cy - r * 1.1), (cx + r * 0.7, cy), (cx, cy + r * 1.1), (cx - r * 0.7, cy)]
    if kind == "arrow":  # pointing right
        w, h = r * 0.32, r * 0.8
        return [(cx - r, cy - w), (cx + r * 0.1, cy - w), (cx + r * 0.1, cy - h), (cx + r, cy), (cx + r * 0.1, cy + h),
                (cx + r * 0.1, cy + w), (cx - r, cy + w)]
    if kind == "bar":
        return [(cx - r, cy - r * 0.36), (cx + r, cy - r * 0.36), (cx + r, cy + r * 0.36), (cx - r, cy + r * 0.36)]
    if kind == "tee":
        w = r * 0.34
        top = cy - r + 2 * w
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, top), (cx + w, top), (cx + w, cy + r),
                (cx - w, cy + r), (cx - w, top), (cx - r, top)]
    return None


def _mask(kind: str, cx: float, cy: float, r: float, size: int) -> Image.Image:
    """A supersampled L-mode mask of one filled object."""
    m = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(m)
    s = _SS
    if kind == "circle":
        d.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)
    elif kind == "moon":
        d.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)
        o = r * 0.55
        d.ellipse([(cx - r + o) * s, (cy - r - o * 0.3) * s, (cx + r + o) * s, (cy + r - o * 0.3) * s], fill=0)
    elif kind == "heart":
        q = r * 0.52
        d.ellipse([(cx - 2 * q) * s, (cy - r * 0.75) * s, cx * s, (cy - r * 0.75 + 2 * q) * s], fill=255)
        d.ellipse([cx * s, (cy - r * 0.75) * s, (cx + 2 * q) * s, (cy - r * 0.75 + 2 * q) * s], fill=255)
        d.polygon([((cx - 2 * q + 0.2) * s, (cy - r * 0.75 + q * 1.25) * s), ((cx + 2 * q - 0.2) * s,
                   (cy - r * 0.75 + q * 1.25) * s), (cx * s, (cy + r) * s)], fill=255)
    else:
        pts = _polygon(kind, cx, cy, r)
        d.polygon([(x * s, y * s) for x, y in pts or []], fill=255)
    return m


def _outline(mask: Image.Image, width: int) -> Image.Image:
    """The mask minus its erosion: an outline ``width`` supersampled pixels wide."""
    eroded = mask.filter(ImageFilter.MinFilter(2 * width + 1))
    a, b = np.asarray(mask, np.int16), np.asarray(eroded, np.int16)
    return Image.fromarray(np.clip(a - b, 0, 255).astype(np.uint8))


def _texture(kind: str, size: int) -> np.ndarray:
    """Brightness multiplier (H, W) at output resolution for a whole-image texture."""
    y, x = np.mgrid[0:size, 0:size]
    if kind == "stripes":
        return np.where(y % 2 == 1, 0.55, 1.0)
    if kind == "checker":
        return np.where((x + y) % 2 == 1, 0.55, 1.0)
    if kind == "hatch":
        return np.where((x + y) % 4 == 0, 0.35, 1.0)
    return np.ones((size, size))


def _mark(draw: ImageDraw.ImageDraw, mark: str, cx: float, cy: float, r: float, colour: tuple[int, int, int]) -> None:
    s = _SS
    light = sum(colour) > 380
    ink = (20, 20, 20) if light else (245, 245, 245)
    if mark == "dot":
        q = r * 0.3
        draw.ellipse([(cx - q) * s, (cy - q) * s, (cx + q) * s, (cy + q) * s], fill=ink)
    elif mark == "eyes":
        q = r * 0.2
        for dx in (-r * 0.35, r * 0.35):
            ey = cy - r * 0.2
            draw.ellipse([(cx + dx - q) * s, (ey - q) * s, (cx + dx + q) * s, (ey + q) * s], fill=ink)
    elif mark == "band":
        draw.rectangle([(cx - r * 0.6) * s, (cy - r * 0.13) * s, (cx + r * 0.6) * s, (cy + r * 0.13) * s], fill=ink)
    elif mark == "halo":
        q = r * 1.25
        draw.ellipse([(cx - q) * s, (cy - q) * s, (cx + q) * s, (cy + q) * s], outline=(255, 255, 255),
                     width=max(1, round(0.9 * s)))


def render(scene: Scene, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw a scene: uint8 (32, 32, 3). ``rng`` draws the nuisance (slot jitter, +-8 % size, +-10 per channel)."""
    bg, stroke, texture = scene.style
    size = RESOLUTION * _SS
    img = Image.new("RGB", (size, size), BG_RGB[bg])
    slots = SLOTS.get(len(scene.objects), ())
    for obj, (cx, cy, r) in zip(scene.objects, slots, strict=False):
        colour = np.array(RGB[obj.colour])
        if rng is not None:
            cx += float(rng.uniform(-1.2, 1.2))
            cy += float(rng.uniform(-1.2, 1.2))
            r *= float(rng.uniform(0.92, 1.08))
            colour = np.clip(colour + rng.integers(-10, 11, size=3), 0, 255)
        rgb = tuple(int(v) for v in colour)
        mask = _mask(obj.kind, cx, cy, r, size)
        if stroke == "outline":
            mask = _outline(mask, max(1, round(1.1 * _SS)))
        layer = Image.new("RGB", (size, size), rgb)
        if stroke == "blur":
            # a soft object: the filled mask blurred before compositing
            mask = mask.filter(ImageFilter.GaussianBlur(0.9 * _SS))
        img.paste(layer, (0, 0), mask)
        if obj.mark is not None:
            _mark(ImageDraw.Draw(img), obj.mark, cx, cy, r, rgb)
    out = np.asarray(img.resize((RESOLUTION, RESOLUTION), Image.Resampling.BOX), dtype=np.float32)
    out *= _texture(texture, RESOLUTION)[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- sampling

#: Probabilities of a random training scene.
P_EMPTY = 0.04        # no object (the neutral default, what filler-only captions draw)
P_ARTIST = 0.75       # a named style
P_CHARACTER = 0.15    # one of the objects is a character
N_OBJECT_P = (0.45, 0.33, 0.22)  # 1, 2, 3 objects


def sample_scene(rng: np.random.Generator, *, n_objects: int | None = None, artist: str | None | bool = True,
                 character: str | None | bool = True) -> Scene:
    """A random scene. ``artist``/``character``: ``True`` = random per the world's probabilities, ``None``/
    ``False`` = none, a name = that one."""
    if n_objects is None:
        n_objects = 0 if rng.random() < P_EMPTY else int(rng.choice(3, p=N_OBJECT_P)) + 1
    if artist is True:
        artist = ARTISTS[rng.integers(len(ARTISTS))] if rng.random() < P_ARTIST else None
    elif artist is False:
        artist = None
    if character is True:
        character = CHARACTERS[rng.integers(len(CHARACTERS))] if n_objects and rng.random() < P_CHARACTER else None
    elif character is False:
        character = None
    if n_objects == 0:  # the empty scene is the neutral default: no style either (filler-only captions)
        artist = None
    objs: list[Obj] = []
    used: set[str] = set()
    if character:
        c = character_object(character)
        objs.append(c)
        used.add(c.kind)
    while len(objs) < n_objects:
        kind = OBJECTS[rng.integers(len(OBJECTS))]
        if kind in used:
            continue
        used.add(kind)
        objs.append(Obj(kind, COLOURS[rng.integers(len(COLOURS))]))
    order = rng.permutation(len(objs))
    return Scene(tuple(objs[i] for i in order), artist)


# ----------------------------------------------------------------------------------------------- labels

#: Label columns: per object kind its colour index + 1 (0 = absent), then background, stroke, texture, character + 1.
N_LABELS = len(OBJECTS) + 4


def scene_labels(scene: Scene) -> np.ndarray:
    """Integer labels of a scene, as the judge predicts them."""
    out = np.zeros(N_LABELS, dtype=np.int64)
    for o in scene.objects:
        out[OBJECTS.index(o.kind)] = COLOURS.index(o.colour) + 1
    bg, stroke, texture = scene.style
    out[len(OBJECTS)] = BACKGROUNDS.index(bg)
    out[len(OBJECTS) + 1] = STROKES.index(stroke)
    out[len(OBJECTS) + 2] = TEXTURES.index(texture)
    ch = scene.character
    out[len(OBJECTS) + 3] = CHARACTERS.index(ch) + 1 if ch else 0
    return out


def style_id_of(bg: int, stroke: int, texture: int) -> int:
    """Style id (0 default, 1..64 artists, -1 a combination no artist has) from factor indices."""
    return STYLE_IDS.get((BACKGROUNDS[bg], STROKES[stroke], TEXTURES[texture]), -1)


def render_dataset(n: int, seed: int = 0, **kw) -> tuple[np.ndarray, list[Scene]]:
    """``n`` random scenes and their renders (uint8 (n, 32, 32, 3)); deterministic given ``seed``."""
    rng = np.random.default_rng([seed, 1])
    scenes = [sample_scene(rng, **kw) for _ in range(n)]
    images = np.stack([render(s, rng) for s in scenes]) if n else np.zeros((0, RESOLUTION, RESOLUTION, 3), np.uint8)
    return images, scenes


def grid(scenes: list[Scene], cols: int = 8, scale: int = 4, seed: int = 0) -> Image.Image:
    """Renders of ``scenes`` in a grid, upscaled ``scale`` times (nearest)."""
    rng = np.random.default_rng(seed)
    tiles = [render(s, rng) for s in scenes]
    rows = math.ceil(len(tiles) / cols)
    canvas = np.zeros((rows * RESOLUTION, cols * RESOLUTION, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[r * RESOLUTION:(r + 1) * RESOLUTION, c * RESOLUTION:(c + 1) * RESOLUTION] = t
    img = Image.fromarray(canvas)
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
