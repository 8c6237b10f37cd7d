"""T1 (text-only) attack success on the canvas world: ErasePro's default vs UCE (and concept expansion), per
attack category, with n and 95 % Wilson intervals (erasepro_core/robust/measure.py).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/robust_t1.py --kind style --methods unedited,default,uce2023 --n 40

Writes benchmarks/results/robust/t1-{kind}-{N}-....json (rewritten as each method finishes) and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from erasepro_core.canvas.bench import canvas_on_one_cpu  # noqa: E402
from erasepro_core.canvas.judge import load_judge  # noqa: E402
from erasepro_core.robust.measure import run_t1  # noqa: E402
from erasepro_core.robust.t1 import T1_CATEGORIES, parse_search  # noqa: E402

METHODS: dict[str, dict | None] = {
    "unedited": None,
    "default": {"method": "erasepro"},
    # the `characters` preset's token policy: the name's tokens through EOS (a causal encoder carries a name forward)
    "to_eos": {"method": "erasepro", "token_policy": "to_eos"},
    "to_end": {"method": "erasepro", "token_policy": "to_end"},  # through padding, as UCE's 2023 protocol pairs
    # the bare name only (UCE's protocols phrase the bare concept): far fewer columns than the five templates
    "to_eos_bare": {"method": "erasepro", "token_policy": "to_eos", "templates": ["{}"]},
    "to_end_bare": {"method": "erasepro", "token_policy": "to_end", "templates": ["{}"]},
    "to_end_bare_exact": {"method": "erasepro", "token_policy": "to_end", "templates": ["{}"], "residual_ridge": 0.0},
    "to_eos_pw10": {"method": "erasepro", "token_policy": "to_eos", "preserve_weight": 10.0},
    "uce2025": {"method": "uce"},
    "uce2023": {"method": "uce", "uce_protocol": "uce2023"},
    "uce_custom": {"method": "uce", "uce_protocol": "custom"},
    # the mass-erasure sweep's tuned UCE row where it differs from a protocol's defaults (style N = 1 and 10)
    "uce2025_sp0.1": {"method": "uce", "uce_preserve_scale": 0.1},
    "expand8": {"method": "erasepro"},  # + concept expansion (8 neighbours), see erasepro_core/robust/expansion.py
}


def hooks_for(names: list[str]) -> dict:
    out = {}
    for name in names:
        if name.startswith("expand"):
            from erasepro_core.robust.expansion import expansion_hook

            out[name] = expansion_hook(int(name[len("expand"):].split("_")[0]))
    return out


def _ci(r: dict) -> str:
    return f"{r['rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"


def table(res: dict) -> str:
    cats = [c for c in T1_CATEGORIES if c in next(iter(res["methods"].values()))["categories"]]
    out = ["| method | " + " | ".join(cats) + " | T1 pooled ↓ | preserved ↑ | objects ↑ |",
           "|---|" + "---|" * (len(cats) + 3)]
    for name, row in res["methods"].items():
        out.append(f"| {name} | " + " | ".join(_ci(row["categories"][c]) for c in cats)
                   + f" | {_ci(row['t1_pooled'])} | {_ci(row['preserved'])} | {_ci(row['objects'])} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="style")
    ap.add_argument("--concepts", type=int, default=1)
    ap.add_argument("--methods", default="unedited,default,uce2023")
    ap.add_argument("--categories", default=",".join(T1_CATEGORIES))
    ap.add_argument("--n", type=int, default=40, help="images per attack category (and preserved prompts)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--search", default="", help="the word search's budget, e.g. pool=8192,sweeps=3,n_tokens=4 "
                    "(default: pool=512,sweeps=2 and the name's token count up to 2)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "robust"))
    args = ap.parse_args()
    try:
        args.search = parse_search(args.search)
    except ValueError as exc:
        ap.error(f"--search: {exc}")
    pipe = canvas_on_one_cpu()
    judge = load_judge()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.methods.split(",")
    tag = "-search-" + "-".join(f"{k}{v}" for k, v in args.search.items()) if args.search else ""
    path = out / f"t1-{args.kind}-{args.concepts}-s{args.seed}-n{args.n}-{'_'.join(names)}{tag}.json"

    def save(partial: dict) -> None:  # after each method, so a partial run leaves its numbers on disk
        path.write_text(json.dumps(partial, indent=1))

    merged = run_t1(pipe, judge, kind=args.kind, concepts=args.concepts, seed=args.seed,
                    methods={name: METHODS[name] for name in names}, categories=args.categories.split(","),
                    n=args.n, n_preserved=args.n, hooks=hooks_for(names),
                    log=lambda m: print(m, file=sys.stderr, flush=True), on_method=save, search=args.search)
    print(table(merged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
