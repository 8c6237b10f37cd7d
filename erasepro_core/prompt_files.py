"""Prompt files (one prompt a line, ``#`` comments): the generic preserve set and a base model's own.

Torch-free, so the base-model registry counts a model's preserve prompts without loading the library's solver.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PRESERVE_FILE = "erasepro_preserve.txt"  # a base-model folder may ship its own preserve set


def read_prompt_file(path: Path) -> list[str]:
    """The prompts of ``path``: its non-empty lines that are not ``#`` comments, stripped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def generic_preserve_file() -> Path:
    """The generic preserve set shipped with erasepro_core."""
    return Path(str(resources.files("erasepro_core") / "data" / "preserve_prompts.txt"))


def preserve_file_of(model_dir: str | Path | None) -> Path:
    """The preserve set a base model uses: its folder's ``erasepro_preserve.txt`` if it has one, else the generic."""
    own = Path(model_dir) / PRESERVE_FILE if model_dir else None
    return own if own is not None and own.is_file() else generic_preserve_file()
