"""Co-occurrence on the canvas world: erase one object kind, keep the other objects of the same scene
(see erasepro_core/canvas/cooccurrence.py for the metrics).

    .venv/bin/python benchmarks/canvas_cooccurrence.py --objects star,heart --methods default,uce2025 --images 48

Writes benchmarks/results/canvas_cooccurrence/<object>-s<seed>-n<images>.json (one entry per method) and prints
a markdown table with 95 % Wilson intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from canvas_mass import METHODS  # noqa: E402

from erasepro_core.canvas.cooccurrence import run_cooccurrence  # noqa: E402
from erasepro_core.canvas.judge import load_judge  # noqa: E402
from erasepro_core.canvas.world import OBJECTS  # noqa: E402
from erasepro_core.pipeline import load_pipeline, quiet_libraries  # noqa: E402


def _ci(r: dict) -> str:
    return f"{r['rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", default="star,heart,arrow")
    ap.add_argument("--methods", default="default,to_eos,uce2025,uce2023,uce_custom")
    ap.add_argument("--images", type=int, default=48, help="scenes with the object, and again without it")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "canvas_cooccurrence"))
    args = ap.parse_args()
    objects = [o for o in args.objects.split(",") if o]
    methods = [m for m in args.methods.split(",") if m]
    # refuse bad names before minutes of drawing, naming what is accepted (argparse's exit 2)
    if not objects or any(o not in OBJECTS for o in objects):
        ap.error(f"--objects: {sorted(set(objects) - set(OBJECTS)) or 'none'} not among the objects {list(OBJECTS)}")
    if any(m not in METHODS for m in methods):
        ap.error(f"--methods: {sorted(set(methods) - set(METHODS))} not among {list(METHODS)}")
    torch.set_num_threads(1)
    quiet_libraries()
    pipe = load_pipeline("canvas", device="cpu", dtype="float32")
    judge = load_judge()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| object | method | erased ↓ | kept (other objects) ↑ | control objects ↑ | columns/width |",
             "|---|---|---|---|---|---|"]
    for obj in objects:
        base = run_cooccurrence(obj, options=None, n_images=args.images, seed=args.seed, steps=args.steps,
                                pipe=pipe, judge=judge)
        res = {"unedited": base}
        u = base["unedited"]
        lines.append(f"| {obj} | unedited | {_ci(u['erased'])} | {_ci(u['kept'])} | {_ci(u['control_objects'])} | — |")
        for name in methods:
            r = run_cooccurrence(obj, options=METHODS[name], n_images=args.images, seed=args.seed, steps=args.steps,
                                 pipe=pipe, judge=judge, unedited=u)
            res[name] = r
            e = r["edited"]
            lines.append(f"| {obj} | {name} | {_ci(e['erased'])} | {_ci(e['kept'])} | {_ci(e['control_objects'])} | "
                         f"{r['columns']}/{r['width']} = {r['columns'] / r['width']:.2f} |")
            print(lines[-1], file=sys.stderr, flush=True)
            (out / f"{obj}-s{args.seed}-n{args.images}.json").write_text(json.dumps(res, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
