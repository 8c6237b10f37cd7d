"""The three UCE rows every benchmark shows, and the "tuned UCE" sweep (torch-free: the caller evaluates).

* ``UCE 2025 defaults`` — ``method="uce"`` and nothing else: the authors' current script as it runs by default.
* ``UCE 2023`` — ``uce_protocol="uce2023"``: the paper-era script's inputs and s_p.
* ``UCE tuned`` — the best of :data:`SWEEP` (λ × s_p, on each protocol) by a score the caller computes on a
  *validation* split of prompts, never on the test prompts; ties (equal to :data:`TIE_DIGITS` decimals) go to
  the earlier (smaller) setting.

A benchmark passes its own ``validate(spec) -> float`` (higher is better) and reports the chosen settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import product
from typing import Any

from erasepro_core.spec import ErasureSpec

# λ (the ridge) and s_p (the preserve scale), the two knobs the authors' scripts expose besides s_e; the grid
# brackets their defaults (λ = 0.5; s_p = 1, or max(0.1, 1/N) in 2023) by about a decade each way.
SWEEP: dict[str, tuple[float, ...]] = {"uce_lambda": (0.1, 0.5, 2.0), "uce_preserve_scale": (0.1, 1.0, 10.0)}
PROTOCOLS: tuple[str, ...] = ("uce2025", "uce2023")
TIE_DIGITS = 9  # validation scores equal to this many decimals are a tie

# label -> the wire settings of that row (besides edits and preserve); "UCE tuned" is filled by tune_uce.
UCE_ROWS: dict[str, dict[str, Any]] = {
    "UCE 2025 defaults": {"method": "uce"},
    "UCE 2023": {"method": "uce", "uce_protocol": "uce2023"},
}


@dataclass
class Tuned:
    """The chosen settings, their validation score, and every setting tried with its score."""

    settings: dict[str, Any]
    score: float
    tried: list[tuple[dict[str, Any], float]] = field(default_factory=list)

    def label(self) -> str:
        s = self.settings
        return f"UCE tuned ({s['uce_protocol']}, λ={s['uce_lambda']:g}, s_p={s['uce_preserve_scale']:g})"


def sweep_settings(grid: dict[str, tuple[float, ...]] | None = None,
                   protocols: tuple[str, ...] = PROTOCOLS) -> list[dict[str, Any]]:
    """Every setting of the sweep, as wire settings of ``method="uce"``."""
    grid = grid or SWEEP
    keys = list(grid)
    return [{"method": "uce", "uce_protocol": p, **dict(zip(keys, vals, strict=True))}
            for p in protocols for vals in product(*(grid[k] for k in keys))]


def tune_uce(make_spec: Callable[[dict[str, Any]], ErasureSpec], validate: Callable[[ErasureSpec], float],
             grid: dict[str, tuple[float, ...]] | None = None, protocols: tuple[str, ...] = PROTOCOLS,
             log: Callable[[str], None] | None = None) -> Tuned:
    """The sweep's best setting by ``validate`` (higher is better), which must score validation prompts only.

    ``make_spec(settings)`` builds the job (edits, preserve concepts) with those UCE wire settings.
    """
    tried: list[tuple[dict[str, Any], float]] = []
    for settings in sweep_settings(grid, protocols):
        score = float(validate(make_spec(settings)))
        tried.append((settings, score))
        if log:
            log(f"  tune {settings['uce_protocol']} λ={settings['uce_lambda']:g} "
                f"s_p={settings['uce_preserve_scale']:g}: {score:.3f}")
    # scores are compared to TIE_DIGITS decimals, so rates that differ only in float rounding (2/12 - 1/12 and
    # 3/12 - 2/12) tie, and the tie goes to the earlier setting as stated
    best = max(range(len(tried)), key=lambda i: (round(tried[i][1], TIE_DIGITS), -i))
    return Tuned(tried[best][0], tried[best][1], tried)
