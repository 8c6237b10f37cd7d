"""``erasepro canvas ...`` (train, evaluate, render, train the judge) and ``erasepro bench mass ...``.

Importing this module is cheap (no torch); ``add_parser`` registers both commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _method_options(args: argparse.Namespace) -> dict[str, Any]:
    """Flat spec fields from ``--method``, the named method flags and ``--set key=value``."""
    from erasepro_core.cli import method_flag_values

    out: dict[str, Any] = {"method": "erasepro", **method_flag_values(args)}
    for item in args.set or []:
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v)
    if args.no_default_preserve:
        out["default_preserve"] = False
    return out


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``canvas`` (train, train-judge, eval, render, snapshot, export, card) and ``bench`` (mass)."""
    from erasepro_core.canvas.config import CanvasTrainConfig
    from erasepro_core.cli import add_method_flags

    parser = subparsers.add_parser("canvas", help="the canvas world: train/evaluate its text-to-image model")
    sub = parser.add_subparsers(dest="canvas_command", required=True)
    train = sub.add_parser("train", help="train the model from a seed (resumable)")
    train.add_argument("--out", required=True, help="working directory (checkpoints, logs, out/pipeline)")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    train.add_argument("--stop-at", type=int, default=None, help="stop at this UNet step (resume later)")
    train.add_argument("--resume-from", default=None,
                       help="a resume point written by 'canvas snapshot' to start --out from (implies --resume)")
    for f in fields(CanvasTrainConfig):
        kind = int if isinstance(f.default, tuple) else type(f.default)
        train.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, dest=f"cfg_{f.name}",
                           nargs="+" if isinstance(f.default, tuple) else None)
    ev = sub.add_parser("eval", help="judge accuracy of a pipeline per prompt set and scene kind")
    ev.add_argument("pipeline", nargs="?", default="canvas", help="pipeline folder (default: the canvas model)")
    ev.add_argument("--n", type=int, default=64, help="prompts per (set, scene kind)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--steps", type=int, default=20)
    ev.add_argument("--guidance", type=float, default=5.0)
    ev.add_argument("--json", default=None)
    tj = sub.add_parser("train-judge", help="train the judge CNN on fresh renders")
    tj.add_argument("--out", required=True)
    tj.add_argument("--seed", type=int, default=0)
    tj.add_argument("--steps", type=int, default=2500)
    tj.add_argument("--images", type=int, default=40_000)
    tj.add_argument("--width", type=int, default=48)
    tj.add_argument("--vae", default=None, help="a VAE folder: train half the renders through its round trip")
    tj.add_argument("--init", default=None, help="continue from this saved judge")
    tj.add_argument("--data-seed", type=int, default=None, help="seed of the training renders (default seed + 50)")
    tj.add_argument("--batch", type=int, default=128)
    tj.add_argument("--lr", type=float, default=2e-3)
    rd = sub.add_parser("render", help="write a PNG grid of random scenes")
    rd.add_argument("--out", required=True)
    rd.add_argument("--n", type=int, default=64)
    rd.add_argument("--seed", type=int, default=0)
    sn = sub.add_parser("snapshot", help="write a small float16 resume point of a run (fit to commit)")
    sn.add_argument("--out", required=True, help="the training directory")
    sn.add_argument("--dest", required=True)
    ex = sub.add_parser("export", help="write the float16 pipeline from the latest EMA checkpoint of a run")
    ex.add_argument("--out", required=True, help="the training directory")
    ex.add_argument("--dest", required=True)
    cd = sub.add_parser("card", help="write a model's README.md from its training run and an 'eval --json'")
    cd.add_argument("--run", required=True, help="the training directory (its records give recipe and times)")
    cd.add_argument("--model", required=True, help="the exported model folder to write README.md into")
    cd.add_argument("--eval", required=True, dest="eval_json", help="the JSON written by 'canvas eval --json'")
    cd.add_argument("--status", default=None, help="a markdown file placed before the limitations")
    cd.add_argument("--commands", default=None, help="a file of the shell lines that made the model")
    cd.add_argument("--machine", default="a quiet 2-core CPU", help="what the stage times were measured on")
    parser.set_defaults(func=run_canvas)

    bench = subparsers.add_parser("bench", help="benchmarks that print numbers (mass erasure on canvas)")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    m = bsub.add_parser("mass", help="erase N styles or characters at once; judge erased and preserved prompts")
    m.add_argument("--model", default="canvas", help="'canvas' or a canvas pipeline folder")
    add_method_flags(m)
    m.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any flat spec setting of the method, e.g. --set uce_lambda=0.5 (repeatable)")
    m.add_argument("--no-default-preserve", action="store_true")
    m.add_argument("--no-preserve-others", action="store_true",
                   help="do not name the other concepts of the kind as preserve concepts")
    m.add_argument("--kind", choices=["style", "character"], default="style")
    m.add_argument("--concepts", type=int, required=True, help="how many concepts to erase at once")
    m.add_argument("--seed", type=int, default=0, help="draws the concepts, the prompts and the sampling noise")
    m.add_argument("--images", type=int, default=48, help="images for erased and again for preserved prompts")
    m.add_argument("--steps", type=int, default=20)
    m.add_argument("--guidance", type=float, default=5.0)
    m.add_argument("--json", default=None, help="write the result here")
    bench.set_defaults(func=run_bench)


def run_canvas(args: argparse.Namespace) -> int:
    cmd = args.canvas_command
    if cmd == "train":
        from erasepro_core.canvas.config import CanvasTrainConfig
        from erasepro_core.canvas.train import run_training

        kw = {f.name: getattr(args, f"cfg_{f.name}") for f in fields(CanvasTrainConfig)}
        kw["unet_channels"] = tuple(kw["unet_channels"])
        if args.resume_from:
            from erasepro_core.canvas.train import restore

            restore(args.resume_from, args.out)
            conf = json.loads((Path(args.out) / "config.json").read_text())
            conf["unet_channels"] = tuple(conf["unet_channels"])
            defaults = CanvasTrainConfig()
            # the resume point's recipe, except what this command line sets (e.g. --unet-steps to train longer)
            kw = {k: (v if v != getattr(defaults, k) else conf.get(k, v)) for k, v in kw.items()}
        print(run_training(CanvasTrainConfig(**kw), args.out, resume=args.resume or bool(args.resume_from),
                           stop_at=args.stop_at))
        return 0
    if cmd == "train-judge":
        from erasepro_core.canvas.judge import train_judge

        train_judge(args.out, seed=args.seed, steps=args.steps, n_images=args.images, width=args.width,
                    vae_dir=args.vae, init=args.init, data_seed=args.data_seed, batch=args.batch, lr=args.lr)
        return 0
    if cmd == "render":
        import numpy as np

        from erasepro_core.canvas.world import grid, sample_scene

        rng = np.random.default_rng(args.seed)
        grid([sample_scene(rng) for _ in range(args.n)], seed=args.seed).save(args.out)
        print(f"wrote {args.out}")
        return 0
    if cmd == "snapshot":
        from erasepro_core.canvas.train import snapshot

        print(snapshot(args.out, args.dest))
        return 0
    if cmd == "export":
        from erasepro_core.canvas.config import CanvasTrainConfig
        from erasepro_core.canvas.train import export_pipeline

        conf = json.loads((Path(args.out) / "config.json").read_text())
        conf["unet_channels"] = tuple(conf["unet_channels"])
        print(export_pipeline(CanvasTrainConfig(**conf), Path(args.out), Path(args.dest)))
        return 0
    if cmd == "card":
        from erasepro_core.canvas.card import write_card
        from erasepro_core.cli import CLIError

        files = [Path(args.eval_json), *(Path(args.run) / f"{r}.json" for r in ("config", "clip_done", "vae_done")),
                 Path(args.run) / "unet_log.jsonl", *(Path(v) for v in (args.status, args.commands) if v)]
        missing = [str(f) for f in files if not f.is_file()]
        if missing or not Path(args.model).is_dir():
            raise CLIError(f"canvas card needs a finished run, an exported model folder and these files: "
                           f"{', '.join(missing) or args.model + ' (not a folder)'}")
        ev = json.loads(Path(args.eval_json).read_text())
        if not isinstance(ev, dict) or not {"args", "rows"} <= set(ev):
            raise CLIError(f"{args.eval_json} is not what 'canvas eval --json' writes (an object with args and rows)")
        text = {k: Path(v).read_text() if v else "" for k, v in (("status", args.status), ("commands", args.commands))}
        print(write_card(args.model, args.run, ev["rows"], eval_args=ev["args"], machine=args.machine,
                         status=text["status"], commands=text["commands"].strip()))
        return 0
    if cmd == "eval":
        from erasepro_core.canvas.evaluate import evaluate_pipeline, table
        from erasepro_core.pipeline import load_pipeline, quiet_libraries

        quiet_libraries()
        pipe = load_pipeline(args.pipeline, device="cpu", dtype="float32")
        rows = evaluate_pipeline(pipe, n=args.n, seed=args.seed, steps=args.steps, guidance=args.guidance)
        print(table(rows))
        if args.json:  # what 'canvas card' reads: the rows and the arguments that made them
            args_used = {"n": args.n, "seed": args.seed, "steps": args.steps, "guidance": args.guidance}
            Path(args.json).write_text(json.dumps({"args": args_used, "rows": rows}, indent=2) + "\n")
        return 0
    raise AssertionError(cmd)


def run_bench(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from erasepro_core.canvas.bench import build_spec, choose_concepts, run_mass
    from erasepro_core.cli import CLIError, _validation_message
    from erasepro_core.pipeline import quiet_libraries

    try:
        options = _method_options(args)
        build_spec(args.kind, choose_concepts(args.kind, args.concepts, args.seed), options)
    except ValidationError as exc:
        raise CLIError(_validation_message(exc)) from exc
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise CLIError(str(exc)) from exc
    quiet_libraries()
    out = run_mass(args.model, kind=args.kind, concepts=args.concepts, seed=args.seed, options=options,
                   n_erased_images=args.images, n_preserved_images=args.images, steps=args.steps,
                   guidance=args.guidance, preserve_others=not args.no_preserve_others,
                   log=lambda m: print(m, file=sys.stderr))
    text = json.dumps(out, indent=2) + "\n"
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    keys = ("erased_rate", "preserved_accuracy", "object_accuracy", "unedited_erased_rate",
            "unedited_preserved_accuracy", "n_images", "columns_per_width")
    print(json.dumps({k: out[k] for k in keys}))
    return 0
