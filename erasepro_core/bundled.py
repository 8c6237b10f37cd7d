"""Where the shipped shapes-world model lives (package data), without importing the shapes world itself:
a worker serving ``bundled`` needs the path, not the renderer, captions or training code."""

from __future__ import annotations

from pathlib import Path

BUNDLED = "bundled"
CANVAS = "canvas"
MODEL_DIR = Path(__file__).parent / "shapes" / "model"
JUDGE_DIR = Path(__file__).parent / "shapes" / "judge"
CANVAS_MODEL_DIR = Path(__file__).parent / "canvas" / "model"
CANVAS_JUDGE_DIR = Path(__file__).parent / "canvas" / "judge"


def bundled_model_path() -> Path:
    """Directory of the shipped float16 ``StableDiffusionPipeline`` (load with ``local_files_only=True``)."""
    return MODEL_DIR


def bundled_model_available() -> bool:
    """Whether the shipped weights are present in this checkout."""
    return (MODEL_DIR / "model_index.json").is_file() and (MODEL_DIR / "unet").is_dir()


def bundled_judge_available() -> bool:
    """Whether the shipped judge weights are present."""
    return (JUDGE_DIR / "judge.safetensors").is_file()


def canvas_model_path() -> Path:
    """Directory of the shipped float16 canvas-world ``StableDiffusionPipeline``."""
    return CANVAS_MODEL_DIR


def canvas_model_available() -> bool:
    """Whether the canvas model's weights are present in this checkout."""
    return (CANVAS_MODEL_DIR / "model_index.json").is_file() and (CANVAS_MODEL_DIR / "unet").is_dir()


#: Names ``load_pipeline`` resolves to shipped model folders.
SHIPPED_MODELS: dict[str, Path] = {BUNDLED: MODEL_DIR, CANVAS: CANVAS_MODEL_DIR}
