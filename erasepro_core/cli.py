"""The ``erasepro`` command: erase, generate, inspect, shapes; serve/keys/demo/worker load lazily."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import ValidationError

from erasepro_core.devices import DTYPE_NAMES
from erasepro_core.methods import METHODS
from erasepro_core.methods.base import PreserveTokens
from erasepro_core.spec import ErasureSpec, wire_errors

# Subcommands that live outside the core library; imported only when named, so `erasepro erase` never
# loads FastAPI and `erasepro serve` never loads torch in the API process.
_PLUGINS = {"serve": "app.cli", "keys": "app.cli", "demo": "app.demo", "worker": "worker.cli",
            "shapes": "erasepro_core.shapes.cli", "canvas": "erasepro_core.canvas.cli",
            "bench": "erasepro_core.canvas.cli"}


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _validation_message(exc: ValidationError) -> str:
    err = wire_errors(exc)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "spec"
    msg = err["msg"]
    return msg if msg.startswith(f"{loc}:") else f"{loc}: {msg}"


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_spec(args: argparse.Namespace) -> ErasureSpec:
    data: dict[str, Any] = {}
    if args.spec:
        path = Path(args.spec)
        if not path.is_file():
            raise CLIError(f"--spec: no such file {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CLIError(f"--spec: {path} is not valid JSON ({exc})") from exc
    if args.target:
        anchors = args.anchor or [""] * len(args.target)
        if len(anchors) != len(args.target):
            raise CLIError(f"--anchor: give one per --target ({len(args.target)}), or none for empty anchors")
        data["edits"] = [{"target": t, "anchor": a} for t, a in zip(args.target, anchors, strict=True)]
    elif args.anchor:
        raise CLIError("--anchor needs a --target")
    overrides = {"preserve": args.preserve, "templates": args.template}
    data.update({k: v for k, v in overrides.items() if v is not None} | method_flag_values(args))
    if args.no_default_preserve:
        data["default_preserve"] = False
    data = _with_preset(data, args)
    if "edits" not in data:
        raise CLIError("give at least one --target, a --preset, or a --spec file with 'edits'")
    try:
        return ErasureSpec.model_validate(data)
    except ValidationError as exc:
        raise CLIError(_validation_message(exc)) from exc


def _flag_type(ann: Any) -> dict[str, Any]:
    """argparse keywords for a setting's type: a Literal -> choices, a list -> comma-separated, else the type."""
    if get_origin(ann) in (Union, UnionType):  # X | None: the flag's type is X
        ann = next(a for a in get_args(ann) if a is not NoneType)
    if get_origin(ann) is Literal:
        return {"choices": list(get_args(ann))}
    if ann is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(ann) is list:
        item = get_args(ann)[0]
        return {"type": _int_list if item is int else lambda text: [item(v) for v in text.split(",") if v.strip()],
                "metavar": "A,B,..."}
    return {"type": ann, "metavar": "N" if ann is int else "X"}


def _with_preset(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``--preset NAME [--name N …] [--preset-anchor A]`` (or ``"preset": "NAME"`` with ``"preset_params"`` in a
    --spec file) merged into the spec's wire form: the preset's edits first, then yours."""
    from erasepro_core.presets import PresetError, apply_preset

    name, params = args.preset, {}
    if name is None and isinstance(data.get("preset"), str):  # a --spec file naming a preset to expand
        name, params = data.pop("preset"), data.pop("preset_params", None) or {}
    if name is None:
        if args.name or args.preset_anchor is not None:
            raise CLIError("--name and --preset-anchor need a --preset")
        return data
    if args.name:
        params["names"] = args.name
    if args.preset_anchor is not None:
        params["anchor"] = args.preset_anchor
    try:
        return apply_preset(data, name, params)
    except PresetError as exc:
        flag = {"preset": "--preset", "names": "--name", "anchor": "--preset-anchor"}.get(exc.field, exc.field)
        raise CLIError(f"{flag}: {exc.message}") from exc


def cmd_presets(args: argparse.Namespace) -> int:
    """List the moderation presets: name, version, what each targets and preserves, its parameters."""
    from erasepro_core.presets import PRESETS

    if args.json:
        print(json.dumps([p.describe() for p in PRESETS.values()], indent=2))
        return 0
    for p in PRESETS.values():
        d = p.describe()
        print(f"{p.name} (version {p.version}): {p.title}\n  targets:   {p.targets}\n  preserves: {p.preserves}\n"
              f"  names: {d['params']['names']}; anchor: {d['params']['anchor']}; judge: {p.judge}")
    return 0


def _dest(wire: str) -> str:
    return f"setting_{wire}"


def add_method_flags(p: argparse.ArgumentParser) -> None:
    """``--method`` and one flag per setting of every registered method, named after its wire name
    (``uce_lambda`` -> ``--uce-lambda``), plus the older spellings the config lists in ``cli_aliases``."""
    p.add_argument("--method", choices=sorted(METHODS))
    for method in METHODS.values():
        config = method.config
        for wire, field in method.settings.items():
            f = config.model_fields[field]
            alias = config.cli_aliases.get(field)
            flags = ["--" + wire.replace("_", "-"), *([alias] if alias else [])]
            help_ = f"(method {method.name}) {f.description or ''}".replace("%", "%%")
            p.add_argument(*flags, dest=_dest(wire), help=help_, **_flag_type(f.annotation))


def method_flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The flat spec fields the method flags set (``method`` included); flags left out are absent."""
    values = {"method": args.method} | {wire: getattr(args, _dest(wire), None)
                                        for method in METHODS.values() for wire in method.settings}
    return {k: v for k, v in values.items() if v is not None}


def _progress_bar(desc: str):
    from tqdm import tqdm

    bar = tqdm(total=100, desc=desc, unit="%", file=sys.stderr, leave=False,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def update(stage: str, fraction: float) -> None:
        bar.n = int(round(100 * fraction))
        bar.set_postfix_str(stage, refresh=True)

    return bar, update


def _quiet_libraries() -> None:
    """The libraries' progress bars and advisories off; imports torch and diffusers (seconds), so a command calls it
    only once its input checks out: a bad spec fails at once."""
    from erasepro_core.pipeline import quiet_libraries

    quiet_libraries()


def cmd_erase(args: argparse.Namespace) -> int:
    spec = build_spec(args)
    _quiet_libraries()
    from erasepro_core.erasure import erase
    from erasepro_core.pipeline import load_pipeline, save_pipeline

    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    bar, update = _progress_bar("erasing")
    try:
        result = erase(pipe, spec, progress=update)
    finally:
        bar.close()
    out = result.delta.save(args.out)
    s = result.report["summary"]
    print(f"wrote {out} ({len(result.delta.tensors)} tensors, base {result.delta.fingerprint[:12]})")
    print(f"K/V residual {s['kv_residual']:.2e}  held-out {s['kv_heldout_residual'] or 0:.3f}  "
          f"preserve drift {s['kv_preserve_drift'] or 0:.4f}  update {s['kv_update_norm']:.4f}")
    for w in result.report["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    if args.report:
        Path(args.report).write_text(json.dumps(result.report, indent=2), encoding="utf-8")
    if args.export:
        from erasepro_core.delta import apply_delta

        apply_delta(pipe, result.delta)
        save_pipeline(pipe, args.export)
        print(f"exported the edited pipeline to {args.export}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from erasepro_core.delta import apply_delta
    from erasepro_core.pipeline import generate, load_pipeline

    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    if args.delta:
        apply_delta(pipe, args.delta)
    images = generate(pipe, args.prompt, negative_prompt=args.negative_prompt, seed=args.seed,
                      steps=args.steps, guidance=args.guidance, width=args.width, height=args.height,
                      num_images=args.num_images)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out] if len(images) == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(len(images))]
    for img, p in zip(images, paths, strict=True):
        img.save(p)
        print(f"wrote {p}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from erasepro_core.delta import Delta

    delta = Delta.load(args.path)
    if args.json:
        print(json.dumps({**delta.summary(), "report": delta.report, "spec": delta.spec}, indent=2))
        return 0
    s = delta.summary()
    print(f"ErasePro delta {args.path}")
    print(f"  format {s['format_version']}, made by erasepro {s['library_version']}, base {s['fingerprint'][:16]}")
    print(f"  base model: {s['base']}")
    print(f"  method {s['method']}: " + ", ".join(f"{e['target']!r}->{e['anchor']!r}" for e in s["edits"] or []))
    print(f"  {s['n_tensors']} tensors, {s['n_parameters']:,} parameters")
    print(f"  {'site':60s} {'stage':11s} {'residual':>9s} {'held-out':>9s} {'drift':>8s} {'|Δ|/|W|':>8s}")
    for site in delta.report.get("sites", []):
        print(f"  {site['site'][-60:]:60s} {site['stage']:11s} {site['residual']:9.2e} "
              f"{site.get('heldout_residual', float('nan')):9.3f} {site.get('preserve_drift', float('nan')):8.4f} "
              f"{site['update_norm']:8.4f}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from erasepro_core.delta import Delta
    from erasepro_core.formats import check_format
    from erasepro_core.lora import export_checkpoint
    from erasepro_core.pipeline import load_pipeline

    delta = Delta.load(args.delta)
    # Refuse before loading the base model (minutes for a large one) when the format cannot carry the edit.
    check_format(delta.base.get("family", ""), delta.tensors, args.to)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CLIError(f"--out: {out} exists and is not an empty folder")
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    export_checkpoint(pipe, delta, out, args.to)
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    print(f"wrote {out} ({args.to}: {files})")
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    from erasepro_core.pipeline import load_pipeline
    from erasepro_core.warmup import warm

    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    out = warm(pipe, progressive=not args.kv_only, preserve_tokens=args.preserve_tokens or ["last"])
    for mode, r in out["modes"].items():
        done = ", ".join(r["computed"]) or "nothing (already stored)"
        print(f"preserve tokens {mode!r}: computed {done} in {r['seconds']:.2f}s")
    where = out["store"] or "memory only (ERASEPRO_STATS_DIR=off)"
    print(f"statistics of {out['prompts']} preserve prompts in {where}")
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="bundled",
                   help="'bundled' (the shipped shapes model), a local diffusers folder or a hub id")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=list(DTYPE_NAMES),
                   help="load the pipeline in this dtype (default: as stored)")


def _unavailable(name: str, module: str):
    def run(args: argparse.Namespace) -> int:
        raise CLIError(f"'{name}' needs {module}, which is not installed with this copy of ErasePro")

    return run


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="erasepro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    e = sub.add_parser("erase", help="compute an erasure delta", description="Erase concepts from a pipeline.")
    _add_model_args(e)
    e.add_argument("--target", action="append", help="concept to erase (repeatable)")
    e.add_argument("--anchor", action="append", help="concept to map it to, one per --target ('' = empty)")
    e.add_argument("--preserve", action="append", help="concept to keep unchanged (repeatable)")
    e.add_argument("--no-default-preserve", action="store_true",
                   help="do not add the generic preserve set (UCE's uce2025/uce2023 protocols never add it)")
    e.add_argument("--spec", help="JSON file with ErasureSpec fields (flags override it)")
    e.add_argument("--preset", help="a moderation preset (see 'erasepro presets'): its edits, preserve set and "
                                    "templates, before your own --target/--preserve")
    e.add_argument("--name", action="append", help="a name for --preset artists|characters|brands (repeatable)")
    e.add_argument("--preset-anchor", help="what each --name maps onto (default: the preset's)")
    e.add_argument("--template", action="append", help="prompt template containing {} (repeatable; for UCE's "
                   "uce2025/uce2023 protocols: phrasings of the erase prompts, as the authors' --expand_prompts)")
    add_method_flags(e)
    e.add_argument("--out", required=True, help="where to write the delta (.safetensors)")
    e.add_argument("--report", help="also write the solver report as JSON here")
    e.add_argument("--export", help="also write the full edited pipeline (diffusers folder) here")
    e.set_defaults(func=cmd_erase)

    g = sub.add_parser("generate", help="sample images", description="Generate images, optionally with a delta.")
    _add_model_args(g)
    g.add_argument("--delta", help="an ErasePro delta to apply first")
    g.add_argument("--prompt", required=True)
    g.add_argument("--negative-prompt")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steps", type=int, help="sampling steps (default: the model family's, 25 for SD, 28 for FLUX)")
    g.add_argument("--guidance", type=float, help="guidance scale (default: the family's, 5.0 for SD, 3.5 for FLUX)")
    g.add_argument("--width", type=int)
    g.add_argument("--height", type=int)
    g.add_argument("--num-images", type=int, default=1)
    g.add_argument("--out", required=True, help="PNG path (numbered when --num-images > 1)")
    g.set_defaults(func=cmd_generate)

    w = sub.add_parser("warmup", help="compute a base model's preserve statistics ahead of time",
                       description="Store the generic preserve statistics of a base model on disk "
                                   "(ERASEPRO_STATS_DIR, default ~/.cache/erasepro/preserve-stats), so the first "
                                   "erasure in any process on this machine skips the preserve pass.")
    _add_model_args(w)
    w.add_argument("--kv-only", action="store_true", help="skip the progressive stage's layers")
    w.add_argument("--preserve-tokens", action="append", choices=list(get_args(PreserveTokens)),
                   help="token mode(s) to warm (repeatable; default last)")
    w.set_defaults(func=cmd_warmup)

    c = sub.add_parser("convert", help="write a delta as a LoRA (diffusers/PEFT or kohya) or a diffusers folder",
                       description="Convert a delta into a checkpoint other tools load, with a model card: "
                                   "'lora' (pipe.load_lora_weights), 'kohya' (ComfyUI, A1111), 'diffusers' (the full "
                                   "edited pipeline). LoRAs are exact: the edit's own rank, never truncated.")
    c.add_argument("delta", help="the ErasePro delta (.safetensors)")
    _add_model_args(c)
    c.add_argument("--to", required=True, choices=["lora", "kohya", "diffusers"], help="the checkpoint format")
    c.add_argument("--out", required=True, help="the folder to write (created; must be empty if it exists)")
    c.set_defaults(func=cmd_convert)

    pr = sub.add_parser("presets", help="list the moderation presets (what each erases and keeps)")
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    pr.set_defaults(func=cmd_presets)

    i = sub.add_parser("inspect", help="show a delta's provenance and report")
    i.add_argument("path")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_inspect)

    # Plugins register only the command being run (or all of them for --help), importing lazily.
    wanted = next((a for a in (argv or []) if not a.startswith("-")), None)
    for module in dict.fromkeys(_PLUGINS.values()):
        names = [n for n, m in _PLUGINS.items() if m == module]
        if wanted is None or wanted in names:
            try:
                importlib.import_module(module).add_parser(sub)
                continue
            except ImportError:
                pass
        for name in names:
            if name not in sub.choices:
                p = sub.add_parser(name, help=f"(see 'erasepro {name} --help')")
                p.set_defaults(func=_unavailable(name, module))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command in ("generate", "inspect", "warmup", "convert"):  # erase: once its spec is valid
        _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"erasepro: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("erasepro: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line for expected user errors, a traceback for bugs
        from erasepro_core.errors import USER_ERRORS

        if isinstance(exc, USER_ERRORS):
            print(f"erasepro: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: plugins raise erasepro_core.cli.CLIError.
    from erasepro_core.cli import main as _main

    sys.exit(_main())
