"""What every attack returns: the candidates it found, their images and judged scores, and the attack
success rate (ASR) as a function of the effort spent (a curve), so "how hard is it to bring back" is visible."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# P(target | image) for a batch of uint8 images (n, H, W, 3) -> float array (n,) in [0, 1].
JudgeFn = Callable[[np.ndarray], np.ndarray]
# (stage, fraction done in [0, 1]).
Progress = Callable[[str, float], None]


@dataclass
class AttackResult:
    """ASR = share of attack instances (prompt context x seed) whose image the judge scores ≥ ``threshold``.

    ``curve`` holds ``(budget, asr)`` pairs: the ASR an attacker reaches after spending ``budget`` units of
    the attack's own effort (words probed, queries, optimisation steps or candidates tried).
    """

    attack: str
    target: str
    budget: int
    asr: float
    curve: list[tuple[int, float]]
    found: list[Any]
    images: np.ndarray
    scores: np.ndarray
    queries: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-safe numbers (no images or tensors); found prompts are kept, embeddings become their norms."""
        found = [f if isinstance(f, str) else round(float(np.linalg.norm(np.asarray(f, dtype=np.float64))), 4)
                 for f in self.found[:50]]
        return {
            "attack": self.attack, "target": self.target, "budget": self.budget, "asr": round(self.asr, 4),
            "curve": [[b, round(a, 4)] for b, a in self.curve], "n_found": len(self.found), "found": found,
            "queries": self.queries, "seconds": round(self.seconds, 2), "details": self.details,
        }


class Reporter:
    """Calls ``progress(stage, fraction)`` with a monotone fraction; a no-op without a callback."""

    def __init__(self, progress: Progress | None, stage: str) -> None:
        self.progress, self.stage, self.last = progress, stage, 0.0

    def __call__(self, fraction: float) -> None:
        self.last = max(self.last, min(max(fraction, 0.0), 1.0))
        if self.progress is not None:
            self.progress(self.stage, self.last)
