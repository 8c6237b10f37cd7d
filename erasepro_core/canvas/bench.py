"""Mass-erasure benchmark on the canvas world: erase N styles (or characters) at once and judge the result.

For N concepts drawn deterministically from the seed, the spec maps each concept's name onto the empty anchor
("") through the kind's solver templates, preserving the other concepts of that kind by name (as UCE's
mass-erasure protocol does) plus the base model's generic preserve set. Prompts are scenes of 1-2 objects
naming one concept each, in the canonical phrasing; none equals a solver prompt. Measured on the same prompts
and seeds before and after the edit:

* ``erased_rate``        -- erased-concept prompts on which the judge still sees the erased style/character;
* ``preserved_accuracy`` -- other-concept prompts drawn with their own style/character;
* ``object_accuracy``    -- prompts whose plain objects are all present in the right colour;
* ``preserved_change``   -- mean absolute pixel change (0-1) on the other-concept prompts;
* ``columns`` / ``width`` -- constrained columns (concepts x templates x tokens) against the context width.

Each rate comes with its count and a 95 % Wilson interval.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from erasepro_core.canvas.captions import (
    CHARACTER_SOLVER_TEMPLATES,
    STYLE_SOLVER_TEMPLATES,
    Prompt,
    plain_caption,
)
from erasepro_core.canvas.world import ARTISTS, CHARACTERS, OBJECTS, Scene, sample_scene
from erasepro_core.intervals import rate_ci

Kind = Literal["style", "character"]
KINDS: tuple[str, ...] = ("style", "character")
SPLITS: tuple[str, ...] = ("test", "validation")


def canvas_on_one_cpu() -> Any:
    """The canvas pipeline in float32 on one CPU thread, with the libraries' logging quiet: how the robustness
    benchmarks load the world (one thread, so their timings do not depend on the machine's other load)."""
    import torch

    from erasepro_core.pipeline import load_pipeline, quiet_libraries

    torch.set_num_threads(1)
    quiet_libraries()
    return load_pipeline("canvas", device="cpu", dtype="float32")


def concepts_of(kind: str) -> tuple[str, ...]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return ARTISTS if kind == "style" else CHARACTERS


def choose_concepts(kind: str, n: int, seed: int) -> list[str]:
    """``n`` concepts of ``kind`` drawn deterministically from ``seed``."""
    pool = concepts_of(kind)
    if not 1 <= n < len(pool):
        raise ValueError(f"--concepts must be between 1 and {len(pool) - 1} for kind {kind!r} (there are "
                         f"{len(pool)}; at least one must remain to measure preservation)")
    rng = np.random.default_rng([seed, 7, KINDS.index(kind)])
    return [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]


#: a validation split never uses a prompt among the first this many test prompts of either group (every test
#: run in docs/benchmarks.md uses at most 200; the test draws are prefixes of one stream, so this covers them)
TEST_POOL = 400


def concept_prompts(kind: str, names: list[str], n_images: int, seed: int, salt: int,
                    exclude: frozenset[str] | set[str] = frozenset()) -> list[Prompt]:
    """``n_images`` canonical prompts cycling over ``names`` (1-2 objects with a style, character + 1 object).

    A draw whose text is in ``exclude`` is skipped and drawn again for the same name, so with nothing excluded
    the prompts are the first ``n_images`` of one stream (a run with fewer images is a prefix of one with more).
    """
    rng = np.random.default_rng([seed, 11, salt])
    out: list[Prompt] = []
    tries = 0
    while len(out) < n_images:
        tries += 1
        if tries > 100 * n_images + 100:
            raise ValueError(f"could not draw {n_images} {kind} prompts outside the {len(exclude)} excluded ones")
        name = names[len(out) % len(names)]
        # a character comes with one more object, so no prompt is a bare name (a solver prompt)
        n_obj = 1 + int(rng.integers(2)) if kind == "style" else 2
        scene = (sample_scene(rng, n_objects=n_obj, artist=name, character=False) if kind == "style"
                 else sample_scene(rng, n_objects=n_obj, artist=False, character=name))
        text = plain_caption(scene)
        if text not in exclude:
            out.append(Prompt(text, scene, "plain"))
    return out


def split_prompts(kind: str, erased: list[str], others: list[str], n_erased: int, n_preserved: int, seed: int,
                  split: str = "test") -> tuple[list[Prompt], list[Prompt]]:
    """The erased-concept and other-concept prompts of a split.

    ``"test"`` is the benchmark's prompts; ``"validation"`` (for tuning a method's settings) draws from other
    streams and skips every prompt among the first :data:`TEST_POOL` test prompts of either group, so the two
    splits share no prompt text.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    salt = 2 * SPLITS.index(split)
    exclude: set[str] = set()
    if split != "test":
        exclude = {p.text for p in concept_prompts(kind, erased, TEST_POOL, seed, 1)}
        exclude |= {p.text for p in concept_prompts(kind, others, TEST_POOL, seed, 2)}
    return (concept_prompts(kind, erased, n_erased, seed, 1 + salt, exclude),
            concept_prompts(kind, others, n_preserved, seed, 2 + salt, exclude))


def solver_templates(kind: str) -> list[str]:
    return list(STYLE_SOLVER_TEMPLATES if kind == "style" else CHARACTER_SOLVER_TEMPLATES)


def build_spec(kind: str, erased: list[str], options: dict[str, Any] | None = None, *,
               preserve_others: bool = True):
    """The erasure spec of a mass-erasure run; ``options`` are flat spec fields (``method``, its settings...)."""
    from erasepro_core.spec import ErasureSpec

    others = [c for c in concepts_of(kind) if c not in erased]
    options = dict(options or {})
    data: dict[str, Any] = {"edits": [{"target": c, "anchor": ""} for c in erased],
                            "preserve": others if preserve_others else []}
    # UCE's published protocols phrase the bare concept unless asked otherwise: leave their default alone
    uce_protocol = options.get("uce_protocol", "uce2025") if options.get("method") == "uce" else None
    if uce_protocol in (None, "custom"):
        data["templates"] = solver_templates(kind)
    data.update(options)
    return ErasureSpec.model_validate(data)


def objects_right(pred_row: np.ndarray, scene: Scene) -> bool:
    """Every plain (non-character) object of ``scene`` present in its colour."""
    from erasepro_core.canvas.world import COLOURS

    return all(int(pred_row[OBJECTS.index(o.kind)]) == COLOURS.index(o.colour) + 1
               for o in scene.objects if o.character is None)


@dataclass
class Judged:
    concept_seen: np.ndarray  # judge sees the prompt's own concept
    objects_ok: np.ndarray
    images: np.ndarray


def judge_prompts(pipe, judge, kind: str, prompts: list[Prompt], seed: int, steps: int, guidance: float,
                  batch: int = 64) -> Judged:
    from erasepro_core.canvas.judge import style_ids
    from erasepro_core.canvas.train import sample_grid
    from erasepro_core.canvas.world import ARTIST_STYLE, STYLE_IDS

    imgs = [sample_grid(pipe, [p.text for p in prompts[i : i + batch]], seed=seed + i, steps=steps, guidance=guidance)
            for i in range(0, len(prompts), batch)]
    images = np.concatenate(imgs) if imgs else np.zeros((0, 32, 32, 3), np.uint8)
    labels = judge.predict_labels(images)
    k = len(OBJECTS)
    if kind == "style":
        want = np.array([STYLE_IDS[ARTIST_STYLE[p.scene.artist]] for p in prompts])
        seen = style_ids(labels) == want
    else:
        want = np.array([CHARACTERS.index(p.scene.character) + 1 for p in prompts])
        seen = labels[:, k + 3] == want
    ok = np.array([objects_right(labels[i], p.scene) for i, p in enumerate(prompts)])
    return Judged(seen, ok, images)


def run_mass(model: str = "canvas", *, kind: str = "style", concepts: int = 10, seed: int = 0,
             options: dict[str, Any] | None = None, n_erased_images: int = 48, n_preserved_images: int = 48,
             steps: int = 20, guidance: float = 5.0, preserve_others: bool = True, pipe=None, judge=None,
             log=None, split: str = "test", unedited_cache: dict | None = None) -> dict[str, Any]:
    """Erase ``concepts`` concepts of ``kind`` and judge erased and preserved prompts before and after.

    ``split="validation"`` draws other prompts (none equal to a test prompt, see :func:`split_prompts`) and
    other sampling seeds for the same concepts, for tuning settings; a tuned method is then reported on
    ``"test"``. ``unedited_cache`` (a dict the caller keeps for one ``pipe``) holds the unedited model's
    judgements per point, so a sweep of settings generates them once."""
    import torch

    from erasepro_core.canvas.judge import load_judge
    from erasepro_core.delta import applied_delta
    from erasepro_core.erasure import erase
    from erasepro_core.pipeline import load_pipeline

    t0 = time.time()
    erased = choose_concepts(kind, concepts, seed)
    others = [c for c in concepts_of(kind) if c not in erased]
    spec = build_spec(kind, erased, options, preserve_others=preserve_others)
    pipe = pipe if pipe is not None else load_pipeline(model, device="cpu", dtype="float32")
    judge = judge if judge is not None else load_judge()
    e_prompts, p_prompts = split_prompts(kind, erased, others, n_erased_images, n_preserved_images, seed, split)
    salt = 2 * SPLITS.index(split)
    seed_e, seed_p = seed + 1_000_000 * salt, seed + 100_000 + 1_000_000 * salt
    key = (kind, concepts, seed, split, n_erased_images, n_preserved_images, steps, guidance)
    if unedited_cache is not None and key in unedited_cache:
        before_e, before_p = unedited_cache[key]
    else:
        before_e = judge_prompts(pipe, judge, kind, e_prompts, seed_e, steps, guidance)
        before_p = judge_prompts(pipe, judge, kind, p_prompts, seed_p, steps, guidance)
        if unedited_cache is not None:
            unedited_cache[key] = (before_e, before_p)
    t_erase = time.time()
    result = erase(pipe, spec)
    t_erase = time.time() - t_erase
    with applied_delta(pipe, result.delta), torch.no_grad():
        after_e = judge_prompts(pipe, judge, kind, e_prompts, seed_e, steps, guidance)
        after_p = judge_prompts(pipe, judge, kind, p_prompts, seed_p, steps, guidance)
    width = int(pipe.text_encoder.config.hidden_size)
    columns = int(result.report.get("n_constraints") or 0)
    change = np.abs(after_p.images.astype(np.float32) - before_p.images.astype(np.float32)).mean() / 255.0
    s = result.report["summary"]
    out = {
        "model": model, "kind": kind, "concepts": concepts, "seed": seed, "split": split, "erased": erased,
        "method": spec.model_dump(exclude={"edits", "preserve", "templates", "heldout_templates"}),
        "erased_rate": float(after_e.concept_seen.mean()),
        "preserved_accuracy": float(after_p.concept_seen.mean()),
        "object_accuracy": float(np.concatenate([after_e.objects_ok, after_p.objects_ok]).mean()),
        "unedited_erased_rate": float(before_e.concept_seen.mean()),
        "unedited_preserved_accuracy": float(before_p.concept_seen.mean()),
        "unedited_object_accuracy": float(np.concatenate([before_e.objects_ok, before_p.objects_ok]).mean()),
        "preserved_change": float(change),
        "n_images": int(len(e_prompts) + len(p_prompts)),
        "detail": {"erased": rate_ci(after_e.concept_seen), "preserved": rate_ci(after_p.concept_seen),
                   "objects": rate_ci(np.concatenate([after_e.objects_ok, after_p.objects_ok])),
                   "unedited_erased": rate_ci(before_e.concept_seen),
                   "unedited_preserved": rate_ci(before_p.concept_seen)},
        "per_prompt": {"erased_seen": after_e.concept_seen.astype(int).tolist(),
                       "preserved_seen": after_p.concept_seen.astype(int).tolist(),
                       "objects_ok": np.concatenate([after_e.objects_ok, after_p.objects_ok]).astype(int).tolist()},
        "columns": columns, "width": width, "columns_per_width": columns / width,
        "solver": {"kv_residual": s.get("kv_residual"), "kv_preserve_drift": s.get("kv_preserve_drift"),
                   "kv_update_norm": s.get("kv_update_norm"), "seconds": t_erase},
        "sampling": {"steps": steps, "guidance": guidance}, "seconds": time.time() - t0,
    }
    if log:
        log(f"{kind} N={concepts} erased {out['erased_rate']:.3f} preserved {out['preserved_accuracy']:.3f} "
            f"objects {out['object_accuracy']:.3f} (unedited {out['unedited_erased_rate']:.3f} / "
            f"{out['unedited_preserved_accuracy']:.3f}); columns/width {columns}/{width}")
    return out

