"""Model cards: the README.md (Hugging Face model-card layout: YAML front matter, then Markdown) that every
exported checkpoint carries: base model and fingerprint, method and settings, the edits, the report's residuals,
drift and norms, the LoRA ranks, and the latest evaluation's figures when one exists."""

from __future__ import annotations

import json
from typing import Any

from erasepro_core.delta import Delta

_HOW = {
    "lora": ("A LoRA in the diffusers/PEFT layout (`pytorch_lora_weights.safetensors`).",
             "```python\npipe.load_lora_weights(\"path/to/this/folder\")  # diffusers, no ErasePro needed\n```"),
    "kohya": ("A LoRA in the kohya layout (`erasepro_lora.safetensors`, with `alpha` = rank: strength 1.0 is "
              "the exact edit).",
              "Copy `erasepro_lora.safetensors` into ComfyUI's `models/loras` (LoraLoader, strength 1.0) or "
              "Automatic1111's `models/Lora` (`<lora:erasepro_lora:1>`); diffusers reads it too:\n\n"
              "```python\npipe.load_lora_weights(\"path/to/this/folder\", weight_name=\"erasepro_lora.safetensors\")"
              "\n```"),
    "diffusers": ("The full edited pipeline as a diffusers folder.",
                  "```python\nDiffusionPipeline.from_pretrained(\"path/to/this/folder\")\n```"),
}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "–" if v is None else str(v)


def _yaml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML scalar


def model_card(delta: Delta, fmt: str, *, factors: dict | None = None, evaluation: dict[str, Any] | None = None
               ) -> str:
    """The README.md text for ``delta`` exported as ``fmt`` (``factors``: the LoRA's, from :mod:`.lora`)."""
    spec, report, base = delta.spec, delta.report, delta.base
    edits = spec.get("edits") or []
    name = str(base.get("name_or_path") or "")
    summary = report.get("summary") or {}
    lines = ["---"]
    if name:
        lines.append(f"base_model: {_yaml_str(name)}")
    lines += [f"library_name: {'diffusers' if fmt != 'kohya' else 'kohya'}", "pipeline_tag: text-to-image",
              "tags:", "  - erasepro", "  - concept-erasure", "  - text-to-image"]
    if fmt in ("lora", "kohya"):
        lines.append("  - lora")
    lines += ["---", "", f"# ErasePro erasure of {', '.join(repr(e.get('target')) for e in edits) or 'nothing'}",
              "", _HOW[fmt][0], "", "## Use it", "", _HOW[fmt][1], "", "## Base model", "",
              f"- model: `{name or 'unknown'}` (family `{base.get('family', '?')}`, dtype `{base.get('dtype', '?')}`)",
              f"- fingerprint (sha256 of the edited base tensors): `{delta.fingerprint}`",
              f"- made by ErasePro {delta.library_version} (delta format {delta.format_version})", "",
              "## Method and settings", "", f"- method: `{spec.get('method', report.get('method'))}`"]
    for k in ("schedule", "layers", "token_policy", "lam", "alpha", "preserve_scale", "harden_rounds"):
        if k in report:
            lines.append(f"- {k}: `{json.dumps(report[k])}`")
    if spec.get("preset"):  # a moderation preset's erasure says which preset, at which version
        p = spec["preset"]
        lines.append(f"- preset: `{p.get('name')}` version {p.get('version')} (erasepro_core/presets), "
                     f"parameters `{json.dumps(p.get('params') or {})}`")
    lines += [f"- templates: {len(spec.get('templates') or [])}, preserve concepts: {len(spec.get('preserve') or [])}"
              f", generic preserve set: {spec.get('default_preserve', True)}", "", "## Edits", "",
              "| target | anchor |", "| --- | --- |"]
    lines += [f"| {e.get('target')} | {e.get('anchor') or '(empty)'} |" for e in edits]
    lines += ["", "## Report", "", "| figure | value |", "| --- | --- |"]
    for k in ("max_residual", "kv_residual", "kv_heldout_residual", "kv_preserve_drift", "kv_update_norm",
              "kv_extra_residual"):
        if k in summary:
            lines.append(f"| {k} | {_fmt(summary[k])} |")
    if summary.get("progressive_update_norms"):
        lines.append(f"| progressive_update_norms | {summary['progressive_update_norms']} |")
    if factors:
        ranks = [f.rank for f in factors.values()]
        worst = max(f.error for f in factors.values())
        lines += ["", "## LoRA", "",
                  f"{len(factors)} layers, rank {min(ranks)}–{max(ranks)} (the edit's own rank; never truncated). "
                  f"The factors reproduce the edited weights to ‖ΔW − up·down‖_F / ‖W‖_F ≤ {worst:.2e} (the bound is "
                  f"the weights' unit roundoff, {next(iter(factors.values())).bound:.2e}).", "",
                  "| layer | rank | error |", "| --- | --- | --- |"]
        lines += [f"| `{k.removesuffix('.weight')}` | {f.rank} | {f.error:.1e} |" for k, f in factors.items()]
    if evaluation:
        lines += ["", "## Latest evaluation", "", f"- id: `{evaluation.get('id', '')}`, "
                  f"finished {evaluation.get('finished_at', evaluation.get('created_at', ''))}", "", "```json",
                  json.dumps(evaluation.get("summary", evaluation), indent=1, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"
