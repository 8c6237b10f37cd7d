"""Image judges, one registry: which judge reads an erasure's images, chosen per erasure kind and base model.

=========  ===========================================================  ==========================================
judge      reads                                                        used for
=========  ===========================================================  ==========================================
shapes     the bundled shapes world's CNN (shape, colour, size, style)  erasures of ``bundled`` (attacks, efficacy)
canvas     the canvas world's CNN (objects, style, character)           erasures of ``canvas`` (bench mass)
nudenet    NudeNet's ONNX detector: exposed body parts                  the ``nudity`` preset on real models
clip       zero-shot CLIP, target vs anchor, from a local folder        artists, characters, brands, plain edits
=========  ===========================================================  ==========================================

:func:`judge_for` picks one; :func:`load_judge` builds the image judges (``nudenet``, ``clip``) that
:func:`erasepro_core.judges.evaluate.judge_erasure` runs before/after an erasure. The world judges are read by
their own evaluations (``erasepro_core.shapes.robustness``, ``erasepro_core.canvas.evaluate``). This module is
torch-free: the REST front end calls :func:`judge_problem` at the door.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from erasepro_core.judges.base import ImageJudge, JudgeUnavailable, Verdict, rate, wilson


@dataclass(frozen=True)
class JudgeEntry:
    """A judge: what it reads, its image-judge class (``module:Class``, None for a world judge read by its own
    evaluation), and a torch-free check of whether it can run here."""

    name: str
    reads: str
    factory: str | None
    problem: Callable[..., str | None]


JUDGES: dict[str, JudgeEntry] = {}


def register(entry: JudgeEntry) -> None:
    JUDGES[entry.name] = entry


def _world(model: str) -> Callable[..., str | None]:
    def problem(**_: Any) -> str | None:
        from erasepro_core import bundled

        ok = bundled.bundled_judge_available() if model == "shapes" else (bundled.CANVAS_JUDGE_DIR /
                                                                         "judge.safetensors").is_file()
        return None if ok else f"the {model} judge's weights are missing from this checkout"
    return problem


def _lazy(module: str) -> Callable[..., str | None]:
    def problem(**options: Any) -> str | None:
        return importlib.import_module(module).problem(**options)
    return problem


register(JudgeEntry("shapes", "the bundled shapes world's CNN", None, _world("shapes")))
register(JudgeEntry("canvas", "the canvas world's CNN", None, _world("canvas")))
register(JudgeEntry("nudenet", "NudeNet's ONNX detector (exposed body parts)",
                    "erasepro_core.judges.nudenet:NudeNetJudge", _lazy("erasepro_core.judges.nudenet")))
register(JudgeEntry("clip", "zero-shot CLIP, target vs anchor, from a local folder",
                    "erasepro_core.judges.clip:CLIPJudge", _lazy("erasepro_core.judges.clip")))
WORLD_JUDGES = {"bundled": "shapes", "canvas": "canvas"}  # base models that ship their own judge
IMAGE_JUDGES = tuple(n for n, e in JUDGES.items() if e.factory)


def judge_for(base_model: str, preset: str | None = None) -> str:
    """The judge of an erasure: its preset's (nudity -> nudenet, the named presets -> clip) on a real model, the
    world's own judge on ``bundled``/``canvas``, else CLIP."""
    if preset is not None:
        from erasepro_core.presets import get_preset

        return get_preset(preset).judge
    return WORLD_JUDGES.get(base_model, "clip")


def judge_problem(name: str, **options: Any) -> str | None:
    """Why judge ``name`` cannot run here (unknown, package or folder missing), or None; loads nothing heavy."""
    entry = JUDGES.get(name)
    if entry is None:
        return f"{name!r} is not a judge (one of {sorted(JUDGES)})"
    return entry.problem(**options)


def load_judge(name: str, **options: Any) -> ImageJudge:
    """An image judge by name (``nudenet``: ``threshold``; ``clip``: ``clip_model``, ``threshold``)."""
    entry = JUDGES.get(name)
    if entry is None or entry.factory is None:
        raise ValueError(f"{name!r} is not an image judge (one of {list(IMAGE_JUDGES)})")
    module, cls = entry.factory.split(":")
    return getattr(importlib.import_module(module), cls)(**options)


__all__ = ["IMAGE_JUDGES", "JUDGES", "ImageJudge", "JudgeEntry", "JudgeUnavailable", "Verdict", "judge_for",
           "judge_problem", "load_judge", "rate", "register", "wilson"]
