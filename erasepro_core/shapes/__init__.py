"""The shapes world: a procedural renderer, a caption grammar, a small trained text-to-image model
(a standard diffusers ``StableDiffusionPipeline``, bundled as float16 safetensors) and a judge CNN.

Importing this package is cheap (numpy and PIL only); the judge and evaluation load torch on first use.

>>> from erasepro_core.shapes import bundled_model_path, load_judge, prompt_set
>>> pipe = StableDiffusionPipeline.from_pretrained(bundled_model_path(), local_files_only=True)
>>> images = pipe("a red circle", height=16, width=16, num_inference_steps=25, guidance_scale=5).images
>>> load_judge().classify(images)  # [{"shape": "circle", "colour": "red", "size": ..., "style": "filled"}]
"""

from __future__ import annotations

from erasepro_core.bundled import (
    JUDGE_DIR,
    MODEL_DIR,
    bundled_judge_available,
    bundled_model_available,
    bundled_model_path,
)
from erasepro_core.lazy import lazy_names
from erasepro_core.shapes.captions import (
    COLOUR_WORDS,
    COMPLEX_TEMPLATES,
    HELDOUT_TEMPLATES,
    PARAPHRASE_TEMPLATES,
    PLAIN_TEMPLATES,
    PROMPT_SETS,
    SHAPE_WORDS,
    SIZE_WORDS,
    SOLVER_TEMPLATES,
    STYLE_WORDS,
    TRAIN_TEMPLATES,
    WORDS,
    Prompt,
    caption,
    fill,
    prompt_set,
    solver_prompts,
)
from erasepro_core.shapes.world import (
    ATTRIBUTES,
    COLOURS,
    RESOLUTION,
    SHAPES,
    SIZES,
    STYLES,
    Attributes,
    all_attributes,
    render,
    render_dataset,
    render_random,
)

__getattr__ = lazy_names(__name__, {
    "erasepro_core.shapes.judge": ("Judge", "load_judge", "train_judge"),
    "erasepro_core.shapes.evaluate": ("evaluate_pipeline", "sample_array", "score"),
    "erasepro_core.shapes.config": ("TrainConfig",),
    "erasepro_core.shapes.train": ("run_training",),
})

__all__ = [
    "ATTRIBUTES", "COLOURS", "COLOUR_WORDS", "COMPLEX_TEMPLATES", "HELDOUT_TEMPLATES", "JUDGE_DIR", "MODEL_DIR",
    "PARAPHRASE_TEMPLATES", "PLAIN_TEMPLATES", "PROMPT_SETS", "RESOLUTION", "SHAPES", "SHAPE_WORDS", "SIZES",
    "SIZE_WORDS", "SOLVER_TEMPLATES", "STYLES", "STYLE_WORDS", "TRAIN_TEMPLATES", "WORDS", "Attributes", "Prompt",
    "all_attributes", "bundled_judge_available", "bundled_model_available", "bundled_model_path", "caption",
    "fill", "prompt_set", "render", "render_dataset", "render_random", "solver_prompts", *__getattr__.names,
]
