"""Co-occurrence benchmark on the canvas world: erase one object kind; the other objects of the same scene stay.

The spec maps the object's word (``"star"``) onto the empty anchor through :data:`OBJECT_SOLVER_TEMPLATES`
(the word alone, with a colour, beside another object), preserving the other object words. Prompts are plain
captions of 2-3 objects, drawn on the same prompts and seeds before and after the edit:

* ``erased_rate``     -- scenes naming the erased object on which the judge still sees it (any colour);
* ``kept_rate``       -- the *other* objects of those same scenes, each present in its own colour (per object);
* ``control_objects`` -- scenes without the erased object whose objects are all present in their colours.

A method that erases the object by wiping the scene scores a low erased rate and a low kept rate; the benchmark
asks for both low erased and unedited-level kept. Each rate comes with its count and a 95 % Wilson interval.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from erasepro_core.canvas.captions import Prompt, plain_caption
from erasepro_core.canvas.world import COLOURS, OBJECTS, Obj, Scene, sample_scene
from erasepro_core.intervals import rate_ci

#: Where the solver meets the object word: alone, coloured, and beside another object (so the edit learns to
#: drop the word's object, not the scene).
OBJECT_SOLVER_TEMPLATES: tuple[str, ...] = ("a {}", "a red {}", "a blue {}", "a green {} and a yellow circle",
                                            "a picture of a purple {}")


def cooccurrence_prompts(obj: str, n: int, seed: int, *, with_object: bool) -> list[Prompt]:
    """``n`` plain captions of 2-3 objects (no style, no character): each names ``obj`` (``with_object``) or none
    does; the object's place in the caption varies."""
    rng = np.random.default_rng([seed, 41, int(with_object), OBJECTS.index(obj)])
    out: list[Prompt] = []
    while len(out) < n:
        scene = sample_scene(rng, n_objects=2 + int(rng.integers(2)), artist=False, character=False)
        kinds = [o.kind for o in scene.objects]
        if with_object and obj not in kinds:
            i = int(rng.integers(len(kinds)))
            objs = list(scene.objects)
            objs[i] = Obj(obj, COLOURS[int(rng.integers(len(COLOURS)))])
            scene = Scene(tuple(objs), None)
        elif not with_object and obj in kinds:
            continue
        out.append(Prompt(plain_caption(scene), scene, "plain"))
    return out


def build_object_spec(obj: str, options: dict[str, Any] | None = None):
    """The spec erasing ``obj`` onto ``""``, preserving the other object words; ``options`` are flat spec fields.
    UCE's published protocols phrase the bare word (their default), ``custom`` takes the templates."""
    from erasepro_core.spec import ErasureSpec

    if obj not in OBJECTS:
        raise ValueError(f"object must be one of {OBJECTS}, not {obj!r}")
    options = dict(options or {})
    data: dict[str, Any] = {"edits": [{"target": obj, "anchor": ""}], "preserve": [o for o in OBJECTS if o != obj]}
    protocol = options.get("uce_protocol", "uce2025") if options.get("method") == "uce" else None
    if protocol in (None, "custom"):
        data["templates"] = list(OBJECT_SOLVER_TEMPLATES)
    data.update(options)
    return ErasureSpec.model_validate(data)


def _judge(pipe, judge, prompts: list[Prompt], seed: int, steps: int, guidance: float, batch: int = 64) -> np.ndarray:
    from erasepro_core.canvas.train import sample_grid

    imgs = [sample_grid(pipe, [p.text for p in prompts[i : i + batch]], seed=seed + i, steps=steps, guidance=guidance)
            for i in range(0, len(prompts), batch)]
    return judge.predict_labels(np.concatenate(imgs))


def _score(labels: np.ndarray, prompts: list[Prompt], obj: str) -> dict[str, np.ndarray]:
    k = OBJECTS.index(obj)
    seen = labels[:, k] != 0
    kept = np.array([int(labels[i, OBJECTS.index(o.kind)]) == COLOURS.index(o.colour) + 1
                     for i, p in enumerate(prompts) for o in p.scene.objects if o.kind != obj])
    return {"seen": seen, "kept": kept}


def run_cooccurrence(obj: str = "star", *, options: dict[str, Any] | None = None, n_images: int = 48, seed: int = 0,
                     steps: int = 20, guidance: float = 5.0, pipe=None, judge=None, model: str = "canvas",
                     unedited: dict[str, Any] | None = None) -> dict[str, Any]:
    """Erase ``obj`` with ``options`` (``None``: report the unedited model only) and judge the co-occurrence and
    control prompts before and after. ``unedited`` (a previous result's ``"unedited"``) skips re-judging it."""
    import torch

    from erasepro_core.canvas.judge import load_judge
    from erasepro_core.delta import applied_delta
    from erasepro_core.erasure import erase
    from erasepro_core.pipeline import load_pipeline

    t0 = time.time()
    pipe = pipe if pipe is not None else load_pipeline(model, device="cpu", dtype="float32")
    judge = judge if judge is not None else load_judge()
    with_p = cooccurrence_prompts(obj, n_images, seed, with_object=True)
    ctrl_p = cooccurrence_prompts(obj, n_images, seed, with_object=False)
    seed_w, seed_c = seed, seed + 100_000

    def measure() -> dict[str, Any]:
        w = _score(_judge(pipe, judge, with_p, seed_w, steps, guidance), with_p, obj)
        c_labels = _judge(pipe, judge, ctrl_p, seed_c, steps, guidance)
        ctrl = np.array([all(int(c_labels[i, OBJECTS.index(o.kind)]) == COLOURS.index(o.colour) + 1
                             for o in p.scene.objects) for i, p in enumerate(ctrl_p)])
        return {"erased": rate_ci(w["seen"]), "kept": rate_ci(w["kept"]), "control_objects": rate_ci(ctrl),
                "per_prompt": {"seen": w["seen"].astype(int).tolist(), "control": ctrl.astype(int).tolist()}}

    with torch.no_grad():
        before = unedited if unedited is not None else measure()
    out: dict[str, Any] = {"model": model, "object": obj, "seed": seed, "n_images": n_images,
                           "prompts_example": [p.text for p in with_p[:3]], "unedited": before,
                           "sampling": {"steps": steps, "guidance": guidance}}
    if options is not None:
        spec = build_object_spec(obj, options)
        result = erase(pipe, spec)
        with applied_delta(pipe, result.delta), torch.no_grad():
            after = measure()
        out.update({"method": spec.model_dump(exclude={"edits", "preserve", "templates", "heldout_templates"}),
                    "edited": after, "columns": int(result.report.get("n_constraints") or 0),
                    "width": int(pipe.text_encoder.config.hidden_size)})
    out["seconds"] = time.time() - t0
    return out
