"""Before/after judging of an erasure on a real model: the same prompts and seeds drawn from the base model and
from the erased one, each image read by an image judge (NudeNet, CLIP), the flagged rate on each side with its
sample size and 95 % interval, and every prompt's images with their verdicts.

The prompts come from the erasure's preset (``eval_items``: the I2P-style list of ``nudity``, the style prompts
of ``artists`` …) or, for plain edits, from :data:`PLAIN_PROMPTS` around each target. What the evaluation job
(``worker/evaluate.py``) and ``benchmarks/moderation.py`` run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from erasepro_core.judges.base import ImageJudge, Verdict, rate

if TYPE_CHECKING:  # the REST front end imports this module for its prompt lists: no PIL needed there
    from PIL import Image

PLAIN_PROMPTS: tuple[str, ...] = ("a photo of {}", "a painting of {}", "{}, highly detailed")
MAX_PROMPTS = 64
MAX_SAMPLES = 8  # images per prompt and side


def eval_items(spec: dict[str, Any]) -> list[dict[str, str]]:
    """(prompt, target, anchor) to draw for an erasure's wire spec: its preset's, else plain phrasings of each
    edit, prompt-major so that a capped list still covers every target."""
    if spec.get("preset"):
        from erasepro_core.presets import eval_items as preset_items

        return preset_items(spec["preset"])["eval_items"]
    edits = spec.get("edits") or []
    return [{"prompt": t.format(e["target"]), "target": e["target"], "anchor": e.get("anchor", "")}
            for t in PLAIN_PROMPTS for e in edits]


def judge_erasure(pipe: Any, delta: Any, items: Sequence[dict[str, str]], judge: ImageJudge, *, samples: int = 2,
                  seed: int = 0, steps: int | None = None, guidance: float | None = None,
                  progress: Callable[[str, float], None] | None = None,
                  ) -> tuple[dict[str, Any], list[tuple[list[Image.Image], list[Image.Image]]]]:
    """Draw ``samples`` images per item from ``pipe`` as it is (before) and with ``delta`` applied (after; restored
    on exit), seed ``seed + i`` for item ``i`` on both sides, and judge them. Returns (report, images per item)."""
    from erasepro_core.delta import applied_delta
    from erasepro_core.pipeline import generate

    if not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples: 1..{MAX_SAMPLES} images per prompt, got {samples}")
    if not 1 <= len(items) <= MAX_PROMPTS:
        raise ValueError(f"prompts: 1..{MAX_PROMPTS}, got {len(items)}")
    total = 2 * len(items)

    def draw(side: str, offset: int) -> list[list[Image.Image]]:
        out = []
        for i, it in enumerate(items):
            if progress is not None:
                progress(f"drawing {side}", (offset + i) / total)
            out.append(generate(pipe, it["prompt"], seed=seed + i, steps=steps, guidance=guidance,
                                num_images=samples))
        return out

    before = draw("before", 0)
    with applied_delta(pipe, delta):
        after = draw("after", len(items))
    if progress is not None:
        progress("judging", 1.0)
    rows: list[dict[str, Any]] = []
    sides: dict[str, list[Verdict]] = {"before": [], "after": []}
    for it, b, a in zip(items, before, after, strict=True):
        vb, va = judge.verdicts(b, it["target"], it["anchor"]), judge.verdicts(a, it["target"], it["anchor"])
        sides["before"] += vb
        sides["after"] += va
        rows.append({**it, "before": {**rate(vb), "verdicts": [v.as_dict() for v in vb]},
                     "after": {**rate(va), "verdicts": [v.as_dict() for v in va]}})
    report = {
        "judge": judge.describe(), "prompts": len(items), "samples_per_prompt": samples,
        "images_per_side": len(sides["before"]), "seed": seed, "steps": steps,
        "before": rate(sides["before"]), "after": rate(sides["after"]),
        "labels": {s: dict(Counter(label for v in vs for label in v.labels)) for s, vs in sides.items()},
        "per_prompt": rows,
    }
    return report, list(zip(before, after, strict=True))
