"""Judge a canvas pipeline: how often it draws what its prompts ask for, per prompt set and scene kind."""

from __future__ import annotations

from typing import Any

import numpy as np

from erasepro_core.canvas.bench import objects_right
from erasepro_core.canvas.captions import PROMPT_SETS, Prompt, prompt_set
from erasepro_core.canvas.world import ARTIST_STYLE, ARTISTS, CHARACTERS, OBJECTS
from erasepro_core.intervals import wilson

#: Scene kinds of the model card: (name, prompt_set keyword arguments).
SCENE_KINDS: dict[str, dict[str, Any]] = {
    "1 object + style": {"n_objects": 1, "artist": True, "character": False},
    "2-3 objects + style": {"n_objects": None, "artist": True, "character": False},
    "character": {"n_objects": 1, "artist": False, "character": True},
    "1 object, no style": {"n_objects": 1, "artist": False, "character": False},
}


def _prompts(set_name: str, kind: str, n: int, seed: int) -> list[Prompt]:
    kw = dict(SCENE_KINDS[kind])
    if kw["n_objects"] is None:  # 2 or 3 objects: draw 3x and keep the multi-object ones
        out = [p for p in prompt_set(set_name, 3 * n, seed, artist=True, character=False, n_objects=None)
               if len(p.scene.objects) >= 2]
        return out[:n]
    return prompt_set(set_name, n, seed, **kw)


def score(labels: np.ndarray, prompts: list[Prompt]) -> dict[str, np.ndarray]:
    """Per prompt: objects right, style right, character right, all right."""
    from erasepro_core.canvas.judge import style_ids
    from erasepro_core.canvas.world import scene_labels

    k = len(OBJECTS)
    sid = style_ids(labels)
    want = np.stack([scene_labels(p.scene) for p in prompts])
    plain = [[OBJECTS.index(o.kind) for o in p.scene.objects if o.character is None] for p in prompts]
    present = np.array([all(labels[i, j] > 0 for j in js) for i, js in enumerate(plain)])
    colour = np.array([all(labels[i, j] == want[i, j] for j in js if labels[i, j] > 0) for i, js in enumerate(plain)])
    obj = np.array([objects_right(labels[i], p.scene) for i, p in enumerate(prompts)])
    sty = np.array([sid[i] == p.scene.style_id for i, p in enumerate(prompts)])
    ch = np.array([labels[i, k + 3] == (CHARACTERS.index(p.scene.character) + 1 if p.scene.character else 0)
                   for i, p in enumerate(prompts)])
    return {"objects": obj, "present": present, "colour": colour,
            "background": labels[:, k] == want[:, k], "stroke": labels[:, k + 1] == want[:, k + 1],
            "texture": labels[:, k + 2] == want[:, k + 2], "style": sty, "character": ch, "all": obj & sty & ch}


def evaluate_pipeline(pipe, judge=None, *, sets: tuple[str, ...] = PROMPT_SETS, kinds: tuple[str, ...] | None = None,
                      n: int = 64, seed: int = 0, steps: int = 20, guidance: float = 5.0) -> list[dict[str, Any]]:
    """One row per (prompt set, scene kind): accuracy of objects, style, character and all, with 95 % intervals."""
    from erasepro_core.canvas.judge import load_judge
    from erasepro_core.canvas.train import sample_grid

    judge = judge or load_judge()
    rows = []
    for si, set_name in enumerate(sets):
        for ki, kind in enumerate(kinds or tuple(SCENE_KINDS)):
            prompts = _prompts(set_name, kind, n, seed * 1000 + si * 10 + ki)
            images = np.concatenate([sample_grid(pipe, [p.text for p in prompts[i : i + 64]], seed=seed + i,
                                                 steps=steps, guidance=guidance) for i in range(0, len(prompts), 64)])
            s = score(judge.predict_labels(images), prompts)
            row: dict[str, Any] = {"set": set_name, "kind": kind, "n": len(prompts)}
            for key, v in s.items():
                row[key] = float(v.mean())
                row[f"{key}_ci95"] = list(wilson(int(v.sum()), len(v)))
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    cols = ("present", "colour", "objects", "background", "stroke", "texture", "style", "character", "all")
    out = ["| set | scene | n | " + " | ".join(cols) + " |", "|---|---|---:|" + "---:|" * len(cols)]
    for r in rows:
        out.append(f"| {r['set']} | {r['kind']} | {r['n']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    return "\n".join(out)


#: Phrasings whose first-EOS states :func:`style_factors` reads, one feature block each.
FACTOR_PHRASINGS = ("a red circle by {}", "a blue star and a green moon in the style of {}", "{} style, a pink heart")


def style_factors(tokenizer, text_encoder) -> dict[str, dict[str, float]]:
    """Does the text tower encode each style factor? The 64 artist names' first-EOS states in
    :data:`FACTOR_PHRASINGS` (standardised, concatenated): how often an artist's nearest artist shares each factor
    (background, stroke, texture), and leave-one-out nearest-centroid accuracy, beside the majority share; and
    ``stroke_vs_fill``: per stroke, whether a *shared* linear direction tells it from the sharp fill
    (:func:`_stroke_probe`)."""
    import torch

    feats = []
    with torch.no_grad():
        for t in FACTOR_PHRASINGS:
            ids = tokenizer([t.format(a) for a in ARTISTS], padding="max_length", max_length=tokenizer.model_max_length,
                            return_tensors="pt").input_ids
            eos = (ids == tokenizer.eos_token_id).int().argmax(1)
            feats.append(text_encoder(ids)[0][torch.arange(len(ids)), eos].float())
    f = torch.cat(feats, 1)
    f = torch.nn.functional.normalize((f - f.mean(0)) / f.std(0).clamp_min(1e-6), dim=1)
    sim = f @ f.T
    sim.fill_diagonal_(-9)
    nearest = sim.argmax(1).numpy()
    res = {}
    for i, factor in enumerate(("background", "stroke", "texture")):
        lab = np.array([ARTIST_STYLE[a][i] for a in ARTISTS])
        values = sorted(set(lab))
        right = 0
        for j in range(len(ARTISTS)):
            others = np.arange(len(ARTISTS)) != j
            cents = torch.stack([f[torch.from_numpy(others & (lab == v))].mean(0) for v in values])
            right += values[int((cents @ f[j]).argmax())] == lab[j]
        res[factor] = {"nearest_shares": float((lab[nearest] == lab).mean()),
                       "nearest_centroid": right / len(ARTISTS),
                       "majority": max(float((lab == v).mean()) for v in set(lab))}
    res["stroke_vs_fill"] = {s: _stroke_probe(feats, s) for s in ("outline", "blur")}
    return res


def _stroke_probe(feats: list, stroke: str, ridge: float = 10.0) -> float:
    """Leave-one-artist-out ridge classifier, ``stroke`` vs fill, on per-phrasing first-EOS states (each phrasing
    a sample): accuracy on the held-out artist's phrasings (chance 0.5). Below chance means the held-out artist is
    read as its stroke sibling, which shares its background and texture: the stroke is no shared direction."""
    import torch

    keep = [i for i, a in enumerate(ARTISTS) if ARTIST_STYLE[a][1] in ("fill", stroke)]
    lab = np.array([ARTIST_STYLE[ARTISTS[i]][1] == stroke for i in keep], dtype=float)
    x = torch.stack([f[keep] for f in feats]).double().numpy()  # (phrasings, artists, width)
    right = 0
    for j in range(len(keep)):
        train = np.arange(len(keep)) != j
        xs, ys = x[:, train].reshape(-1, x.shape[-1]), np.tile(lab[train], len(feats))
        mu, sd = xs.mean(0), xs.std(0) + 1e-6
        z = (xs - mu) / sd
        w = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ (ys - ys.mean()))
        said = ((x[:, j] - mu) / sd) @ w + ys.mean() > 0.5
        right += int((said == bool(lab[j])).sum())
    return right / (len(keep) * len(feats))
