"""T2 (embedding) attacks on the canvas world with the existing attacks (erasepro_core/attacks): a judge function
for the canvas judge and harmless templates per kind."""

from __future__ import annotations

import numpy as np

from erasepro_core.attacks.result import JudgeFn

#: Harmless templates with ``{}`` where the attack works (a style phrase / a character slot).
T2_TEMPLATES: dict[str, tuple[str, ...]] = {
    "style": ("a red circle by {}", "a blue star in the style of {}", "{} style, a green moon"),
    "character": ("{} and a red circle", "a photo of {} with a blue star", "{} next to a yellow heart"),
}


def canvas_judge_fn(kind: str, name: str, judge=None) -> JudgeFn:
    """1.0 where the canvas judge reads the erased style (its three factors) or character off an image, else 0.0
    (the judge gives labels, not calibrated probabilities; the attacks' threshold 0.5 splits them)."""
    from erasepro_core.canvas.judge import load_judge, style_ids
    from erasepro_core.canvas.world import ARTIST_STYLE, CHARACTERS, OBJECTS, STYLE_IDS

    j = judge or load_judge()
    if kind == "style":
        want = STYLE_IDS[ARTIST_STYLE[name]]

        def p(images: np.ndarray) -> np.ndarray:
            return (style_ids(j.predict_labels(images)) == want).astype(np.float64)
    else:
        want = CHARACTERS.index(name) + 1

        def p(images: np.ndarray) -> np.ndarray:
            return (j.predict_labels(images)[:, len(OBJECTS) + 3] == want).astype(np.float64)
    return p
