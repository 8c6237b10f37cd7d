"""The few statistics every benchmark and evaluation reports: a rate with its Wilson interval, and a paired
difference with its bootstrap interval. The REST front end imports :func:`wilson` (through the judges) and has no
numpy: numpy is imported where it is used."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a rate k/n: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def _round(x: float, digits: int | None) -> float:
    return float(x) if digits is None else round(float(x), digits)


def rate_ci(seen: Sequence[bool] | np.ndarray, digits: int | None = None) -> dict[str, Any]:
    """``{"rate": k/n, "k", "n", "ci95": [lo, hi]}`` of booleans (Wilson); ``rate`` is None when n = 0.
    ``digits`` rounds the rate and the interval (for reports read by people)."""
    import numpy as np

    x = np.asarray(seen, dtype=bool)
    k, n = int(x.sum()), int(x.size)
    lo, hi = wilson(k, n)
    return {"rate": _round(k / n, digits) if n else None, "k": k, "n": n,
            "ci95": [_round(lo, digits), _round(hi, digits)]}


def paired_difference(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray, n_boot: int = 4000,
                      seed: int = 0, digits: int | None = None) -> dict[str, Any]:
    """``mean(a_i − b_i)`` over the same prompts and seeds, with a 95 % paired-bootstrap interval (``n_boot``
    resamples of the pairs); None when there are no pairs."""
    import numpy as np

    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.size == 0:
        return {"diff": None, "ci95": [None, None]}
    idx = np.random.default_rng(seed).integers(x.size, size=(n_boot, x.size))
    d = (x[idx] - y[idx]).mean(1)
    return {"diff": _round((x - y).mean(), digits),
            "ci95": [_round(np.quantile(d, 0.025), digits), _round(np.quantile(d, 0.975), digits)]}


__all__ = ["paired_difference", "rate_ci", "wilson"]
