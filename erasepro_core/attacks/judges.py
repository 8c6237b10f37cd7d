"""Judges for the attacks: callables that return P(target | image) for a batch of images."""

from __future__ import annotations

from typing import Any

import numpy as np

from erasepro_core.attacks.result import JudgeFn


def attribute_judge(value: str, judge: Any = None) -> JudgeFn:
    """P(attribute == ``value``) from the shapes world's judge CNN (the shipped one unless ``judge`` is given),
    read off the head that holds ``value`` (shape, colour, size or style)."""
    from erasepro_core.shapes.judge import load_judge
    from erasepro_core.shapes.world import ATTRIBUTES

    head = next((h for h, values in ATTRIBUTES.items() if value in values), None)
    if head is None:
        raise ValueError(f"{value!r} is not an attribute value of the shapes world")
    j = judge or load_judge()
    idx = list(ATTRIBUTES[head]).index(value)

    def p_target(images: np.ndarray) -> np.ndarray:
        return j.probabilities(images)[head][:, idx]

    return p_target
