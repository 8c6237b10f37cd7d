"""``erasepro shapes ...``: train the shapes-world model, evaluate a pipeline with the judge, train the judge.

Wire-up: ``add_parser(subparsers)`` registers the ``shapes`` command; the parsed namespace dispatches to
:func:`run`. Importing this module is cheap (no torch).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``shapes`` with subcommands ``train``, ``eval``, ``export``, ``train-judge`` and ``render``."""
    from erasepro_core.shapes.config import TrainConfig

    parser = subparsers.add_parser("shapes", help="the shapes world: train/evaluate its small text-to-image model")
    sub = parser.add_subparsers(dest="shapes_command", required=True)

    train = sub.add_parser("train", help="train the model from a seed (resumable)")
    train.add_argument("--out", required=True, help="working directory (checkpoints, logs, out/pipeline)")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    train.add_argument("--export", default=None, help="also copy the float16 pipeline to this directory")
    train.add_argument("--stop-at", type=int, default=None, help="stop (and export) at this UNet step")
    for f in fields(TrainConfig):
        train.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                           dest=f"cfg_{f.name}")

    ev = sub.add_parser("eval", help="judge accuracy of a pipeline's images per prompt set")
    ev.add_argument("pipeline", nargs="?", default=None, help="pipeline directory (default: the bundled model)")
    ev.add_argument("--sets", default="plain,complex,paraphrase,heldout")
    ev.add_argument("--seeds", default="0,1,2,3")
    ev.add_argument("--per-combo", type=int, default=1, help="prompts per shape x colour pair and set")
    ev.add_argument("--steps", type=int, default=25)
    ev.add_argument("--guidance", type=float, default=5.0)
    ev.add_argument("--json", default=None, help="write the results here")

    ex = sub.add_parser("export", help="write the float16 pipeline from the latest EMA checkpoint of a run")
    ex.add_argument("--out", required=True, help="the training directory")
    ex.add_argument("--dest", required=True, help="where to write the pipeline")

    tj = sub.add_parser("train-judge", help="train the judge CNN on fresh renders")
    tj.add_argument("--out", required=True)
    tj.add_argument("--seed", type=int, default=0)
    tj.add_argument("--steps", type=int, default=800)

    rd = sub.add_parser("render", help="write a grid of renders (PNG) of every attribute combination")
    rd.add_argument("--out", required=True)
    rd.add_argument("--seed", type=int, default=0)

    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Dispatch a parsed ``shapes`` command; returns the exit code."""
    cmd = args.shapes_command
    if cmd == "train":
        import shutil

        from erasepro_core.shapes.config import TrainConfig
        from erasepro_core.shapes.train import run_training

        cfg = TrainConfig(**{f.name: getattr(args, f"cfg_{f.name}") for f in fields(TrainConfig)})
        dest = run_training(cfg, args.out, resume=args.resume, stop_at=args.stop_at,
                            log=lambda m: print(m, flush=True))
        if args.export:
            shutil.copytree(dest, args.export, dirs_exist_ok=True)
        return 0
    if cmd == "eval":
        from erasepro_core.shapes.evaluate import evaluate_pipeline, format_table

        res = evaluate_pipeline(
            args.pipeline, sets=args.sets.split(","), seeds=[int(s) for s in args.seeds.split(",")],
            per_combo=args.per_combo, steps=args.steps, guidance=args.guidance,
        )
        print(format_table(res))
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return 0
    if cmd == "export":
        from erasepro_core.shapes.config import TrainConfig
        from erasepro_core.shapes.train import export_pipeline

        cfg = TrainConfig(**json.loads((Path(args.out) / "config.json").read_text()))
        step = json.loads((Path(args.out) / "unet_ckpt" / "state.json").read_text())["step"]
        print(export_pipeline(cfg, Path(args.out), Path(args.dest)), f"(EMA at step {step})")
        return 0
    if cmd == "train-judge":
        from erasepro_core.shapes.judge import train_judge

        acc = train_judge(args.out, seed=args.seed, steps=args.steps, log=lambda m: print(m, flush=True))
        print(json.dumps(acc))
        return 0
    if cmd == "render":
        from erasepro_core.shapes.world import save_grid

        print(save_grid(args.out, seed=args.seed))
        return 0
    print(f"unknown shapes command {cmd!r}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m erasepro_core.shapes.cli train --out runs/x``."""
    parser = argparse.ArgumentParser(prog="erasepro")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["shapes", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
