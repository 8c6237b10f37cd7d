"""The canvas world: scenes of 1-3 coloured objects in 64 named styles ("artists") with 20 named characters, a
caption grammar with synonyms, paraphrases and 2,000 neutral filler words, a small text-to-image model whose
``CLIPTextModel`` was trained contrastively (CLIP-style), a judge CNN, and the mass-erasure benchmark.

Importing this package is cheap (numpy and PIL only); training, the judge and the benchmark load torch when used.
See docs/canvas.md.
"""

from __future__ import annotations

from erasepro_core.bundled import CANVAS_MODEL_DIR, canvas_model_available, canvas_model_path
from erasepro_core.canvas.captions import (
    CHARACTER_SOLVER_TEMPLATES,
    PROMPT_SETS,
    STYLE_SOLVER_TEMPLATES,
    Prompt,
    describe,
    filler_words,
    plain_caption,
    probe_words,
    prompt_set,
)
from erasepro_core.canvas.world import (
    ARTIST_STYLE,
    ARTISTS,
    CHARACTER_LOOK,
    CHARACTERS,
    COLOURS,
    OBJECTS,
    Obj,
    Scene,
    render,
    render_dataset,
    sample_scene,
)

__all__ = [
    "ARTISTS", "ARTIST_STYLE", "CANVAS_MODEL_DIR", "CHARACTERS", "CHARACTER_LOOK", "CHARACTER_SOLVER_TEMPLATES",
    "COLOURS", "OBJECTS", "PROMPT_SETS", "Obj", "Prompt", "STYLE_SOLVER_TEMPLATES", "Scene", "canvas_model_available",
    "canvas_model_path", "describe", "filler_words", "plain_caption", "probe_words", "prompt_set", "render",
    "render_dataset", "sample_scene",
]
