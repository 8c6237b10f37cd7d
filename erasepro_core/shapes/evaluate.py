"""Judge-measured accuracy of a shapes-world pipeline's images, per prompt set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from erasepro_core.shapes.captions import PROMPT_SETS, Prompt, prompt_set


def load_cpu_pipeline(path: str | Path | None = None) -> Any:
    """The bundled model (or the pipeline in ``path``), float32 on CPU (:func:`erasepro_core.load_pipeline`)."""
    from erasepro_core.bundled import BUNDLED
    from erasepro_core.pipeline import load_pipeline

    return load_pipeline(path or BUNDLED, device="cpu", dtype="float32")


@torch.no_grad()
def sample_array(pipe, prompts: Sequence[str], seed: int, *, steps: int = 25, guidance: float = 5.0,
             batch: int = 64) -> np.ndarray:
    """uint8 images (n, 16, 16, 3); image i uses generator seed ``seed * 100003 + i``."""
    out = []
    for i in range(0, len(prompts), batch):
        chunk = list(prompts[i : i + batch])
        gens = [torch.Generator().manual_seed(seed * 100003 + i + j) for j in range(len(chunk))]
        res = pipe(chunk, height=16, width=16, num_inference_steps=steps, guidance_scale=guidance,
                   generator=gens, output_type="np")
        out.append((np.clip(res.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def score(judge, images: np.ndarray, prompts: Sequence[Prompt]) -> dict[str, Any]:
    """Fraction of images whose judged shape / colour / both (/ style, / size where asked; None if never
    asked) match the prompt."""
    pred = judge.classify(images)
    shape = np.array([p["shape"] == q.shape for p, q in zip(pred, prompts, strict=True)])
    colour = np.array([p["colour"] == q.colour for p, q in zip(pred, prompts, strict=True)])
    style = np.array([p["style"] == q.style for p, q in zip(pred, prompts, strict=True)])
    sized = [(p["size"] == q.size) for p, q in zip(pred, prompts, strict=True) if q.size is not None]
    return {
        "shape": float(shape.mean()), "colour": float(colour.mean()), "both": float((shape & colour).mean()),
        "style": float(style.mean()), "size": float(np.mean(sized)) if sized else None,
        "n": len(prompts),
    }


def evaluate_pipeline(pipe: Any = None, *, sets: Sequence[str] = PROMPT_SETS, seeds: Sequence[int] = (0, 1, 2, 3),
                      per_combo: int = 1, steps: int = 25, guidance: float = 5.0, judge: Any = None
                      ) -> dict[str, Any]:
    """Per prompt set: judge accuracy over ``len(seeds)`` images per prompt (20 x per_combo prompts per set)."""
    from erasepro_core.shapes.judge import load_judge

    if pipe is None or isinstance(pipe, (str, Path)):
        pipe = load_cpu_pipeline(pipe)
    judge = judge or load_judge()
    results: dict[str, Any] = {"steps": steps, "guidance": guidance, "seeds": list(seeds), "sets": {}}
    for name in sets:
        prompts = prompt_set(name, seed=0, per_combo=per_combo)
        imgs = np.concatenate([sample_array(pipe, [p.text for p in prompts], s, steps=steps, guidance=guidance)
                               for s in seeds])
        results["sets"][name] = score(judge, imgs, list(prompts) * len(seeds))
    return results


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of :func:`evaluate_pipeline` results."""
    lines = [f"{'set':<12}{'shape':>8}{'colour':>8}{'both':>8}{'style':>8}{'size':>8}{'n':>6}"]
    for name, r in results["sets"].items():
        size = "-" if r["size"] is None else f"{r['size']:.3f}"
        lines.append(f"{name:<12}{r['shape']:>8.3f}{r['colour']:>8.3f}{r['both']:>8.3f}{r['style']:>8.3f}"
                     f"{size:>8}{r['n']:>6}")
    return "\n".join(lines)
