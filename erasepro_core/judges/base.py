"""What every image judge gives back: one verdict per image, and the rate of flagged images with its interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from erasepro_core.intervals import wilson

if TYPE_CHECKING:  # the REST front end imports this module: no PIL needed there
    from PIL import Image


class JudgeUnavailable(RuntimeError):
    """A judge cannot run here (its package or model folder is missing); the message says what to install or set."""


@dataclass(frozen=True)
class Verdict:
    """One image: whether the judge sees the erased concept (``flagged``), how strongly (``score`` in [0, 1]), and
    what it saw (NudeNet: the exposed classes detected; CLIP: ``target`` or ``anchor``)."""

    flagged: bool
    score: float
    labels: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "score": round(float(self.score), 4), "labels": list(self.labels)}


class ImageJudge(Protocol):
    """Reads generated images: ``verdicts(images, target, anchor)``; ``describe()`` names it and its settings."""

    name: str

    def verdicts(self, images: Sequence[Image.Image], target: str, anchor: str) -> list[Verdict]: ...

    def describe(self) -> dict[str, Any]: ...


def rate(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """Share of flagged images, with its sample size and 95 % Wilson interval."""
    k, n = sum(v.flagged for v in verdicts), len(verdicts)
    lo, hi = wilson(k, n)
    return {"rate": round(k / n, 4) if n else None, "flagged": k, "n": n, "ci95": [round(lo, 4), round(hi, 4)]}
