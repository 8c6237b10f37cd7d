"""Mass erasure on the canvas world: erase N styles (or characters) at once with each method and option,
judge erased and preserved prompts (see erasepro_core/canvas/bench.py for the metrics).

    .venv/bin/python benchmarks/canvas_mass.py                       # the docs' grid (~20 min on 2 cores)
    .venv/bin/python benchmarks/canvas_mass.py --kinds style --ns 25,50 --methods default,uce --images 200
    .venv/bin/python benchmarks/canvas_mass.py --from-results --kinds style --methods default,exact,uce_custom

Writes one JSON per run under benchmarks/results/canvas_mass/ and prints a markdown table with 95 %
intervals and each method's paired difference against ErasePro's default. ``columns/width`` is the number of
constrained columns (concepts x templates x tokens) over the context width (128 on canvas; 768 on SD-1.x).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from erasepro_core.canvas.bench import run_mass  # noqa: E402
from erasepro_core.canvas.judge import load_judge  # noqa: E402
from erasepro_core.intervals import paired_difference  # noqa: E402
from erasepro_core.methods.uce_tuning import PROTOCOLS, SWEEP, tune_uce  # noqa: E402
from erasepro_core.pipeline import load_pipeline, quiet_libraries  # noqa: E402

#: name -> flat spec options (``method`` and its settings)
METHODS: dict[str, dict] = {
    "default": {"method": "erasepro"},
    "exact": {"method": "erasepro", "residual_ridge": 0.0},  # zero residual at every column count (the paper's)
    "soft10": {"method": "erasepro", "residual_ridge": 10.0},  # a softer residual: more kept, less erased
    "front": {"method": "erasepro", "schedule": "front"},
    "uniform": {"method": "erasepro", "schedule": "uniform"},
    "to_eos": {"method": "erasepro", "token_policy": "to_eos"},
    "harden1": {"method": "erasepro", "harden_rounds": 1},
    "uce2025": {"method": "uce"},
    "uce2023": {"method": "uce", "uce_protocol": "uce2023"},
    "uce_custom": {"method": "uce", "uce_protocol": "custom"},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="canvas")
    ap.add_argument("--kinds", default="style,character")
    ap.add_argument("--ns", default="1,10,25,50", help="concept counts (characters stop at 10)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--images", type=int, default=48, help="erased and again preserved images per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "canvas_mass"))
    ap.add_argument("--tune-uce", action="store_true",
                    help="add a 'uce_tuned' row: the best of UCE's sweep (λ x s_p x protocol) by preserved - erased "
                         "on the validation split (same concepts; other seeds and prompts, none equal to a test "
                         "prompt), then run on the test split")
    ap.add_argument("--val-images", type=int, default=24, help="validation images (erased, and again preserved)")
    ap.add_argument("--tune-lambdas", type=float, nargs="+", default=list(SWEEP["uce_lambda"]),
                    help="the sweep's λ values (default: uce_tuning.SWEEP's)")
    ap.add_argument("--tune-scales", type=float, nargs="+", default=list(SWEEP["uce_preserve_scale"]),
                    help="the sweep's s_p values (default: uce_tuning.SWEEP's)")
    ap.add_argument("--tune-protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS),
                    help="the protocols the sweep tries")
    ap.add_argument("--from-results", action="store_true",
                    help="print the table of the runs already under --out instead of running anything")
    args = ap.parse_args()
    if args.from_results:
        print(table_from_results(Path(args.out), args.kinds.split(","), [int(v) for v in args.ns.split(",")],
                                 args.methods.split(","), args.seed, args.images))
        return 0
    torch.set_num_threads(args.threads)
    quiet_libraries()
    pipe = load_pipeline(args.model, device="cpu", dtype="float32")
    judge = load_judge()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    unedited: dict = {}  # the unedited model's judgements per point and split, generated once for all rows
    for kind in args.kinds.split(","):
        for n in (int(v) for v in args.ns.split(",")):
            if kind == "character" and n > 10:
                continue
            runs = {}
            for name in [m for m in args.methods.split(",") if m]:  # "" runs none (e.g. only --tune-uce)
                t = time.time()
                res = run_mass(args.model, kind=kind, concepts=n, seed=args.seed, options=METHODS[name],
                               n_erased_images=args.images, n_preserved_images=args.images, steps=args.steps,
                               pipe=pipe, judge=judge, unedited_cache=unedited)
                res["name"] = name
                (out / f"{kind}-{n}-{name}-s{args.seed}-i{args.images}.json").write_text(json.dumps(res, indent=1))
                runs[name] = res
                print(f"{kind} N={n} {name}: erased {res['erased_rate']:.3f} preserved "
                      f"{res['preserved_accuracy']:.3f} objects {res['object_accuracy']:.3f} "
                      f"({time.time() - t:.0f}s)", file=sys.stderr, flush=True)
            if args.tune_uce:
                from erasepro_core.canvas.bench import build_spec, choose_concepts

                def make_spec(settings: dict, kind: str = kind, n: int = n):
                    return build_spec(kind, choose_concepts(kind, n, args.seed), settings)

                def validate(spec, kind: str = kind, n: int = n) -> float:
                    m = spec.method
                    opts = {"method": "uce", "uce_protocol": m.protocol, "uce_lambda": m.lam,
                            "uce_preserve_scale": m.preserve_scale}
                    v = run_mass(args.model, kind=kind, concepts=n, seed=args.seed, options=opts,
                                 n_erased_images=args.val_images, n_preserved_images=args.val_images,
                                 steps=args.steps, pipe=pipe, judge=judge, split="validation",
                                 unedited_cache=unedited)
                    return v["preserved_accuracy"] - v["erased_rate"]

                grid = {"uce_lambda": tuple(args.tune_lambdas), "uce_preserve_scale": tuple(args.tune_scales)}
                tuned = tune_uce(make_spec, validate, grid=grid, protocols=tuple(args.tune_protocols),
                                 log=lambda m: print(m, file=sys.stderr, flush=True))
                res = run_mass(args.model, kind=kind, concepts=n, seed=args.seed, options=tuned.settings,
                               n_erased_images=args.images, n_preserved_images=args.images, steps=args.steps,
                               pipe=pipe, judge=judge, unedited_cache=unedited)
                res["name"] = "uce_tuned"
                res["tuned"] = {"settings": tuned.settings, "validation_score": tuned.score,
                                "validation_images": args.val_images, "grid": grid,
                                "protocols": list(args.tune_protocols),
                                "tried": [[t, sc] for t, sc in tuned.tried], "label": tuned.label()}
                (out / f"{kind}-{n}-uce_tuned-s{args.seed}-i{args.images}.json").write_text(json.dumps(res, indent=1))
                runs["uce_tuned"] = res
                print(f"{kind} N={n} uce_tuned {tuned.label()}: erased {res['erased_rate']:.3f} preserved "
                      f"{res['preserved_accuracy']:.3f}", file=sys.stderr, flush=True)
            rows += rows_of(kind, n, runs)
    print(table(rows))
    return 0


def rows_of(kind: str, n: int, runs: dict[str, dict]) -> list[dict]:
    """Table rows of one (kind, N) point, each method paired against ErasePro's default on the same prompts."""
    base = runs.get("default")
    rows = []
    for name, res in runs.items():
        d = res["detail"]
        row = {"kind": kind, "n": n, "method": name, "cols": f"{res['columns']}/{res['width']}",
               "ratio": res["columns_per_width"], "erased": d["erased"], "preserved": d["preserved"],
               "objects": d["objects"], "unedited_erased": d["unedited_erased"],
               "unedited_preserved": d["unedited_preserved"], "change": res["preserved_change"]}
        if base is not None and name != "default":
            row["vs_default_erased"] = paired_difference(res["per_prompt"]["erased_seen"],
                                                         base["per_prompt"]["erased_seen"])
            row["vs_default_preserved"] = paired_difference(res["per_prompt"]["preserved_seen"],
                                                            base["per_prompt"]["preserved_seen"])
        rows.append(row)
    return rows


def table_from_results(out: Path, kinds: list[str], ns: list[int], methods: list[str], seed: int,
                       images: int) -> str:
    """The table of runs already written under ``out`` (no model is loaded; missing runs are skipped)."""
    rows = []
    for kind in kinds:
        for n in ns:
            runs = {}
            for name in methods:
                f = out / f"{kind}-{n}-{name}-s{seed}-i{images}.json"
                if f.is_file():
                    runs[name] = json.loads(f.read_text())
            rows += rows_of(kind, n, runs)
    return table(rows)


def fmt(d: dict | None) -> str:
    return f"{d['diff']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d else "—"


def _ci(r: dict) -> str:
    return f"{r['rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"


def table(rows: list[dict]) -> str:
    out = ["| kind | N | columns/width | method | erased ↓ | preserved ↑ | objects ↑ | Δ erased vs default | "
           "Δ preserved vs default | unedited erased / preserved | image change |",
           "|---|---:|---|---|---|---|---|---|---|---|---:|"]
    for r in rows:
        de = r.get("vs_default_erased")
        dp = r.get("vs_default_preserved")
        out.append(f"| {r['kind']} | {r['n']} | {r['cols']} = {r['ratio']:.2f} | {r['method']} | {_ci(r['erased'])} | "
                   f"{_ci(r['preserved'])} | {_ci(r['objects'])} | {fmt(de)} | {fmt(dp)} | "
                   f"{r['unedited_erased']['rate']:.2f} / {r['unedited_preserved']['rate']:.2f} | {r['change']:.3f} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
