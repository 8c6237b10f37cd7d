"""T2 (embedding) attack success on the canvas world, with the existing attacks: soft tokens, the concept
direction (Ring-A-Bell, continuous) and the closed-form context attack (RECE), against ErasePro's default and UCE.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/robust_t2.py --kind style --methods default,uce2023

Writes benchmarks/results/robust/t2-{kind}-....json and prints a markdown table (ASR with n and 95 % intervals).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from erasepro_core.attacks import ATTACKS, Sampling  # noqa: E402
from erasepro_core.canvas.bench import build_spec, canvas_on_one_cpu, choose_concepts  # noqa: E402
from erasepro_core.canvas.judge import load_judge  # noqa: E402
from erasepro_core.intervals import wilson  # noqa: E402
from erasepro_core.robust.t2 import T2_TEMPLATES, canvas_judge_fn  # noqa: E402

METHODS = {"default": {"method": "erasepro"}, "uce2023": {"method": "uce", "uce_protocol": "uce2023"},
           "uce2025": {"method": "uce"}, "uce_custom": {"method": "uce", "uce_protocol": "custom"}}
#: attack -> (budget, extra keyword arguments); instances = templates x per_template (or refs)
ATTACK_SETUP: dict[str, tuple[int, dict]] = {
    "closed_form": (3, {"per_template": 8, "columns": "concept"}),
    "concept_direction": (3, {"per_template": 8}),
    "soft_token": (24, {"refs": 4, "n_tokens": 2, "lr": 0.05}),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="style")
    ap.add_argument("--methods", default="default,uce2023")
    ap.add_argument("--attacks", default="closed_form,concept_direction,soft_token")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "robust"))
    args = ap.parse_args()
    base = canvas_on_one_cpu()
    judge = load_judge()
    name = choose_concepts(args.kind, 1, args.seed)[0]
    jf = canvas_judge_fn(args.kind, name, judge)
    sampling = Sampling(steps=20, guidance=5.0, batch=64, max_seconds=900)
    out: dict = {"kind": args.kind, "target": name, "templates": list(T2_TEMPLATES[args.kind]), "methods": {}}
    path = Path(args.out) / f"t2-{args.kind}-1-s{args.seed}-{'_'.join(args.methods.split(','))}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    import copy

    from erasepro_core.delta import apply_delta
    from erasepro_core.erasure import erase

    lines = ["| method | attack | budget | ASR | n |", "|---|---|---:|---|---:|"]
    for m in args.methods.split(","):
        res = erase(base, build_spec(args.kind, [name], METHODS[m]))
        edited = copy.deepcopy(base)
        apply_delta(edited, res.delta)
        out["methods"][m] = {}
        for a in args.attacks.split(","):
            t = time.time()
            budget, kw = ATTACK_SETUP[a]
            r = ATTACKS[a](edited, base, name, jf, budget, args.seed, templates=T2_TEMPLATES[args.kind],
                           sampling=sampling, **kw)
            n = len(r.scores)  # instances (template x seed), or soft-token images
            k = int(round(r.asr * n))
            s = r.summary()
            s.update(n=n, k=k, ci95=list(wilson(k, n)), wall_s=round(time.time() - t, 1))
            out["methods"][m][a] = s
            path.write_text(json.dumps(out, indent=1))
            lines.append(f"| {m} | {a} | {budget} | {r.asr:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}] | {n} |")
            print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
