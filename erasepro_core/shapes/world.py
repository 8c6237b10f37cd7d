"""The shapes world: attributes and a deterministic, anti-aliased procedural renderer.

One coloured shape per 16x16 RGB image on a black background. Attributes: shape (4), colour (5),
size (small/large) and style (filled/outlined, the world's analogue of an art style); the position
and a little size/colour jitter are nuisance variables that captions never mention.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple")
SIZES: tuple[str, ...] = ("small", "large")
STYLES: tuple[str, ...] = ("filled", "outlined")
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "size": SIZES,
    "style": STYLES,
}

RGB: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 195, 55),
    "blue": (45, 85, 240),
    "yellow": (240, 220, 35),
    "purple": (175, 55, 225),
}

RESOLUTION = 16
_SUPERSAMPLE = 8
_RADIUS = {"small": 3.2, "large": 5.6}  # in output pixels
_OUTLINE = {"small": 1.3, "large": 1.6}  # outline width in output pixels


@dataclass(frozen=True)
class Attributes:
    """The attributes of one image (the label of a render, the target of a caption)."""

    shape: str
    colour: str
    size: str = "large"
    style: str = "filled"

    def __post_init__(self) -> None:
        for name, values in ATTRIBUTES.items():
            if getattr(self, name) not in values:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; expected one of {values}")

    def as_dict(self) -> dict[str, str]:
        """The attributes as a plain ``{name: value}`` dict."""
        return asdict(self)

    def index(self) -> tuple[int, int, int, int]:
        """Indices into SHAPES, COLOURS, SIZES, STYLES."""
        return (
            SHAPES.index(self.shape),
            COLOURS.index(self.colour),
            SIZES.index(self.size),
            STYLES.index(self.style),
        )


def all_attributes() -> list[Attributes]:
    """Every attribute combination (4 x 5 x 2 x 2 = 80), in a fixed order."""
    return [Attributes(sh, co, si, st) for sh in SHAPES for co in COLOURS for si in SIZES for st in STYLES]


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = r * 0.86
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        rr = r * 1.18
        c = cy + rr * 0.12  # the centroid sits low; shift so the box is centred
        return [(cx + rr * math.cos(a), c + rr * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "cross":
        a, w = r, r * 0.38
        return [
            (cx - w, cy - a), (cx + w, cy - a), (cx + w, cy - w), (cx + a, cy - w),
            (cx + a, cy + w), (cx + w, cy + w), (cx + w, cy + a), (cx - w, cy + a),
            (cx - w, cy + w), (cx - a, cy + w), (cx - a, cy - w), (cx - w, cy - w),
        ]
    raise ValueError(shape)


def render(
    attrs: Attributes,
    *,
    center: tuple[float, float] | None = None,
    scale: float = 1.0,
    rgb: tuple[int, int, int] | None = None,
    resolution: int = RESOLUTION,
) -> np.ndarray:
    """Draw one shape at ``_SUPERSAMPLE`` times the resolution and box-downsample it: uint8 (H, W, 3)."""
    s = _SUPERSAMPLE
    big = resolution * s
    unit = resolution / RESOLUTION
    r = _RADIUS[attrs.size] * scale * unit
    cx, cy = center if center is not None else (resolution / 2, resolution / 2)
    colour = rgb if rgb is not None else RGB[attrs.colour]
    img = Image.new("RGB", (big, big), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    outlined = attrs.style == "outlined"
    width = max(1, round(_OUTLINE[attrs.size] * unit * s))
    if attrs.shape == "circle":
        box = [(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s]
        if outlined:
            draw.ellipse(box, outline=colour, width=width)
        else:
            draw.ellipse(box, fill=colour)
    else:
        pts = [(x * s, y * s) for x, y in _polygon(attrs.shape, cx, cy, r)]
        if outlined:
            draw.polygon(pts, outline=colour, width=width)
        else:
            draw.polygon(pts, fill=colour)
    return np.asarray(img.resize((resolution, resolution), Image.Resampling.BOX), dtype=np.uint8)


def render_random(attrs: Attributes, rng: np.random.Generator, resolution: int = RESOLUTION) -> np.ndarray:
    """Render with the nuisance variables drawn from ``rng``: position, +-8% size, +-12 per colour channel."""
    scale = float(rng.uniform(0.92, 1.08))
    r = _RADIUS[attrs.size] * scale * 1.2
    lo, hi = r + 0.3, RESOLUTION - r - 0.3
    cx, cy = (float(rng.uniform(lo, hi)) for _ in range(2)) if hi > lo else (8.0, 8.0)
    base = np.array(RGB[attrs.colour])
    rgb = tuple(int(v) for v in np.clip(base + rng.integers(-12, 13, size=3), 0, 255))
    u = resolution / RESOLUTION
    return render(attrs, center=(cx * u, cy * u), scale=scale, rgb=rgb, resolution=resolution)


def sample_attributes(rng: np.random.Generator) -> Attributes:
    """A uniformly random attribute combination."""
    return Attributes(
        SHAPES[rng.integers(len(SHAPES))],
        COLOURS[rng.integers(len(COLOURS))],
        SIZES[rng.integers(len(SIZES))],
        STYLES[rng.integers(len(STYLES))],
    )


def render_dataset(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random renders: images uint8 (n, 16, 16, 3) and labels int64 (n, 4) (shape, colour, size, style).

    Deterministic given ``seed``.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    labels = np.empty((n, 4), dtype=np.int64)
    for i in range(n):
        a = sample_attributes(rng)
        images[i] = render_random(a, rng)
        labels[i] = a.index()
    return images, labels


def labels_to_attributes(label: np.ndarray | tuple[int, int, int, int]) -> Attributes:
    """Inverse of :meth:`Attributes.index`."""
    sh, co, si, st = (int(v) for v in label)
    return Attributes(SHAPES[sh], COLOURS[co], SIZES[si], STYLES[st])


def grid(seed: int = 0, scale: int = 4) -> Image.Image:
    """Every attribute combination once (8 rows x 10 columns), upscaled ``scale`` times."""
    rng = np.random.default_rng(seed)
    tiles = np.stack([render_random(a, rng) for a in all_attributes()])
    g = tiles.reshape(8, 10, RESOLUTION, RESOLUTION, 3).transpose(0, 2, 1, 3, 4)
    g = g.reshape(8 * RESOLUTION, 10 * RESOLUTION, 3)
    img = Image.fromarray(g)
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def save_grid(path: str, seed: int = 0) -> str:
    """Write :func:`grid` as a PNG; returns the path."""
    grid(seed).save(path)
    return path
