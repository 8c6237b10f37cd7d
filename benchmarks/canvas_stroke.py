"""Where the canvas model's styles fail (issue 18; docs/canvas.md, "Why it stops at 0.87").

1. Stroke confusion: styled plain prompts (1 and 2-3 objects, ``--n`` each), asked stroke against the judge's
   reading of the generated image, of the same scenes rendered, and rendered through the pipeline's VAE.
2. Style factors in the text tower: the 64 artist names' EOS states in three phrasings; how often an artist's
   nearest artist shares each factor (background, stroke, texture), and leave-one-out nearest-centroid accuracy.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/canvas_stroke.py --pipeline canvas --n 96 --guidance 5
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def stroke_confusion(pipe, judge, n: int, guidance: float) -> dict[str, Counter]:
    """(asked stroke, judged stroke) counts for the model, the renders and the VAE round trip."""
    import torch

    from erasepro_core.canvas.evaluate import _prompts
    from erasepro_core.canvas.train import sample_grid
    from erasepro_core.canvas.world import OBJECTS, render, scene_labels

    k = len(OBJECTS) + 1  # the stroke's column in the judge's labels
    out = {"model": Counter(), "renders": Counter(), "VAE round trip": Counter()}
    for ki, kind in enumerate(("1 object + style", "2-3 objects + style")):
        prompts = _prompts("plain", kind, n, 7000 + ki)
        made = np.concatenate([sample_grid(pipe, [p.text for p in prompts[i : i + 64]], seed=100 + i, steps=20,
                                           guidance=guidance) for i in range(0, len(prompts), 64)])
        rendered = np.stack([render(p.scene, np.random.default_rng([0, i])) for i, p in enumerate(prompts)])
        with torch.no_grad():
            x = torch.from_numpy(rendered).permute(0, 3, 1, 2).float() / 127.5 - 1
            y = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample
            round_trip = ((y.clamp(-1, 1) + 1) * 127.5 + 0.5).byte().permute(0, 2, 3, 1).numpy()
        want = np.stack([scene_labels(p.scene) for p in prompts])[:, k]
        for name, images in (("model", made), ("renders", rendered), ("VAE round trip", round_trip)):
            got = judge.predict_labels(images)[:, k]
            out[name].update(zip(want.tolist(), got.tolist(), strict=True))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default="canvas", help="'canvas' or a canvas pipeline folder")
    ap.add_argument("--n", type=int, default=96, help="prompts per scene kind")
    ap.add_argument("--guidance", type=float, default=5.0)
    args = ap.parse_args()
    import torch

    from erasepro_core.canvas.evaluate import style_factors
    from erasepro_core.canvas.judge import load_judge
    from erasepro_core.canvas.world import STROKES
    from erasepro_core.pipeline import load_pipeline, quiet_libraries

    torch.set_num_threads(1)
    quiet_libraries()
    pipe = load_pipeline(args.pipeline, device="cpu", dtype="float32")
    for name, counts in stroke_confusion(pipe, load_judge(), args.n, args.guidance).items():
        print(f"{name}: asked stroke -> judged " + "; ".join(
            f"{STROKES[a]} {counts[(a, a)]}/{sum(v for (x, _), v in counts.items() if x == a)} right "
            f"({', '.join(f'{STROKES[b]} {counts[(a, b)]}' for b in range(len(STROKES)) if b != a)})"
            for a in range(len(STROKES))))
    factors = style_factors(pipe.tokenizer, pipe.text_encoder)
    pairs = factors.pop("stroke_vs_fill")
    print("text tower, a shared direction tells the stroke from fill (leave-one-artist-out, chance 0.50): "
          + ", ".join(f"{k} {v:.2f}" for k, v in pairs.items()))
    for factor, r in factors.items():
        print(f"text tower, {factor}: nearest artist shares it {r['nearest_shares']:.2f}; leave-one-out "
              f"nearest centroid {r['nearest_centroid']:.2f} (majority {r['majority']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
