"""The prompt guard: a detector, built from an erasure's own closed-form features, that flags prompts whose
context features come near an erased concept (threat model T1, docs/method.md).

Features are the base text encoder's context columns (what every cross-attention K/V site reads), compared in
the K/V metric after centring on the preserve set: with ``G = Σ_s W_o,sᵀ W_o,s`` over the K/V sites and
``μ`` the mean preserve column, a column ``c`` maps to ``z = G^½ (c − μ) / ‖G^½ (c − μ)‖``. An erasure's
*signature* is every target column (the concept's tokens through EOS in each solver template); a prompt's score is
``max_{p, j} z_pᵀ t_j`` over its tokens p (BOS and padding excluded) and signature columns j — the cosine, in the
metric the edit acts in, of its token nearest an erased concept. The threshold is set on the preserve set (the
generic preserve prompts and the named preserve concepts in the same templates): its largest score plus
``margin``, so no preserve prompt is flagged by construction; held-out false positives are measured, not tuned.

What it needs is stored beside the delta: ``guard.safetensors`` (signature, centre, metric factor) and
``guard.json`` (targets, threshold, mode, the preserve scores' summary). Off by default (``prompt_guard="off"``);
``"refuse"`` makes the generation endpoint answer 422 with the reason, ``"log"`` generates and records the flag.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

GUARD_TENSORS = "guard.safetensors"
GUARD_JSON = "guard.json"
GUARD_MODES: tuple[str, ...] = ("off", "refuse", "log")
#: Cosine margin above the largest preserve score (the threshold); chosen on canvas' validation split.
DEFAULT_MARGIN = 0.02
MAX_SIGNATURE = 8192  # signature columns kept (a bound on the guard's size and per-prompt cost)
FORMAT_VERSION = 1


class GuardFormatError(ValueError):
    """A stored guard that cannot be read (wrong shapes, unknown version)."""


@dataclass(frozen=True)
class Verdict:
    """One prompt's outcome: ``flagged`` when ``score ≥ threshold``; ``nearest`` names the erased concept."""

    flagged: bool
    score: float
    threshold: float
    nearest: str | None
    token: str | None = None

    def reason(self) -> str:
        return (f"the prompt comes near the erased concept {self.nearest!r} (token {self.token!r}: similarity "
                f"{self.score:.3f} >= the erasure's guard threshold {self.threshold:.3f})")

    def as_dict(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "score": round(self.score, 4), "threshold": round(self.threshold, 4),
                "nearest": self.nearest, "token": self.token}


def _single_tower(pipe) -> Any:
    from erasepro_core.adapters import adapter_for

    adapter = adapter_for(pipe)
    if len(adapter.towers) != 1 or not adapter.kv_sites:
        raise ValueError("the prompt guard supports pipelines with one CLIP text encoder and cross-attention "
                         "(SD-1.x/2.x); this base model has another text path")
    return adapter


@torch.no_grad()
def token_columns(pipe, prompts: Sequence[str], batch: int = 256) -> tuple[list[torch.Tensor], list[list[str]]]:
    """Per prompt, the base encoder's context columns at its tokens (BOS and padding excluded; EOS kept) and the
    tokens' text. CLIP is causal, so encoding to the longest prompt gives every read state exactly."""
    tok, enc = pipe.tokenizer, pipe.text_encoder
    cols: list[torch.Tensor] = []
    words: list[list[str]] = []
    n_max = int(tok.model_max_length)
    for i in range(0, len(prompts), batch):
        chunk = list(prompts[i : i + batch])
        ids = tok(chunk, truncation=True, max_length=n_max, add_special_tokens=True)["input_ids"]
        length = max(len(r) for r in ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        x = torch.tensor([r + [pad] * (length - len(r)) for r in ids], device=enc.device)
        ctx = enc(x)[0].detach().double().cpu()
        for j, r in enumerate(ids):
            cols.append(ctx[j, 1 : len(r)])
            words.append([t.replace("</w>", "") for t in tok.convert_ids_to_tokens(r[1:])])
    return cols, words


def concept_span_columns(pipe, templates: Sequence[str], concept: str) -> torch.Tensor:
    """Columns of the concept's tokens through EOS in every ``template.format(concept)`` (the erased signature)."""
    tok = pipe.tokenizer
    prompts = [t.format(concept) for t in templates]
    cols, _ = token_columns(pipe, prompts)
    out = []
    for t, c in zip(templates, cols, strict=True):
        pre = t.split("{}", 1)[0].strip()
        start = len(tok(pre, add_special_tokens=False)["input_ids"]) if pre else 0
        out.append(c[start:])
    return torch.cat(out)


@dataclass
class PromptGuard:
    """A detector of prompts near erased concepts (see the module docstring for the maths)."""

    targets: list[str]
    signature: torch.Tensor  # (m, d) unit rows z
    owner: list[int]  # target index of each signature row
    centre: torch.Tensor  # (d,)
    factor: torch.Tensor  # (d, d): z = normalise((c − centre) @ factor)
    threshold: float
    mode: str = "refuse"
    stats: dict[str, Any] = field(default_factory=dict)

    def _z(self, c: torch.Tensor) -> torch.Tensor:
        z = (c - self.centre) @ self.factor
        return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def score_columns(self, cols: list[torch.Tensor]) -> list[tuple[float, int, int]]:
        """Per prompt (score, position of its best token, signature row)."""
        out = []
        for c in cols:
            if len(c) == 0:
                out.append((-1.0, 0, 0))
                continue
            s = self._z(c) @ self.signature.T
            flat = int(s.argmax())
            out.append((float(s.flatten()[flat]), flat // s.shape[1], flat % s.shape[1]))
        return out

    def scores(self, pipe, prompts: Sequence[str]) -> np.ndarray:
        cols, _ = token_columns(pipe, prompts)
        return np.array([s for s, _, _ in self.score_columns(cols)])

    def check(self, pipe, prompt: str) -> Verdict:
        cols, words = token_columns(pipe, [prompt])
        score, pos, row = self.score_columns(cols)[0]
        return Verdict(score >= self.threshold, score, self.threshold, self.targets[self.owner[row]],
                       words[0][pos] if words[0] else None)

    # ------------------------------------------------------------------------------------ storage
    def save(self, directory: str | Path) -> tuple[Path, Path]:
        from erasepro_core.delta import save_tensors

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {"signature": self.signature.float().contiguous(), "centre": self.centre.float().contiguous(),
                   "factor": self.factor.float().contiguous(),
                   "owner": torch.tensor(self.owner, dtype=torch.int32)}
        save_tensors(d / GUARD_TENSORS, tensors)
        meta = {"format": FORMAT_VERSION, "targets": self.targets, "threshold": self.threshold, "mode": self.mode,
                "stats": self.stats}
        (d / GUARD_JSON).write_text(json.dumps(meta, indent=1) + "\n")
        return d / GUARD_TENSORS, d / GUARD_JSON

    @classmethod
    def load(cls, directory: str | Path) -> PromptGuard:
        d = Path(directory)
        return cls.from_bytes((d / GUARD_TENSORS).read_bytes(), (d / GUARD_JSON).read_bytes())

    @classmethod
    def from_bytes(cls, tensors: bytes, meta_json: bytes) -> PromptGuard:
        """A guard from the bytes of its two files (safetensors and JSON only: nothing is unpickled)."""
        from safetensors.torch import load as load_tensors

        meta = json.loads(meta_json)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            raise GuardFormatError(f"guard format {meta.get('format') if isinstance(meta, dict) else None!r} "
                                   f"is not {FORMAT_VERSION}")
        t = load_tensors(tensors)
        sig, owner = t["signature"].double(), t["owner"].tolist()
        if sig.ndim != 2 or len(owner) != len(sig) or t["factor"].shape != (sig.shape[1], sig.shape[1]) \
                or max(owner, default=0) >= len(meta["targets"]):
            raise GuardFormatError("guard tensors do not fit together")
        return cls(list(meta["targets"]), sig, owner, t["centre"].double(), t["factor"].double(),
                   float(meta["threshold"]), str(meta.get("mode", "refuse")), dict(meta.get("stats") or {}))


def kv_metric_factor(pipe) -> torch.Tensor:
    """G^½ (d × d) of the K/V metric ``G = Σ_s W_o,sᵀ W_o,s``, so ‖(c)ᵀ G^½‖ = ‖W_o c‖ summed over sites."""
    from erasepro_core.harden import kv_gram, kv_weights

    g = kv_gram(kv_weights(_single_tower(pipe)))
    evals, evecs = torch.linalg.eigh(g)
    return evecs * evals.clamp_min(0).sqrt()


def build_guard(pipe, targets: Sequence[str], templates: Sequence[str], preserve_prompts: Sequence[str],
                preserve_concepts: Sequence[str] = (), *, mode: str = "refuse", margin: float = DEFAULT_MARGIN,
                extra_signature: Sequence[str] = ()) -> PromptGuard:
    """The guard of an erasure of ``targets`` (phrased by ``templates``), calibrated on ``preserve_prompts`` and the
    ``preserve_concepts`` in the same templates: threshold = max preserve score + ``margin``.
    ``extra_signature`` adds more erased phrasings (e.g. the concept expansion's) to the signature."""
    if mode not in GUARD_MODES[1:]:
        raise ValueError(f"mode must be one of {GUARD_MODES[1:]}")
    _single_tower(pipe)
    factor = kv_metric_factor(pipe)
    pres_prompts = list(preserve_prompts) + [t.format(c) for c in preserve_concepts for t in templates]
    pcols, _ = token_columns(pipe, pres_prompts)
    allp = torch.cat([c for c in pcols if len(c)])
    centre = allp.mean(0)
    names = list(targets) + [e for e in extra_signature if e not in targets]
    rows, owner = [], []
    for i, name in enumerate(names):
        c = concept_span_columns(pipe, templates, name)
        rows.append(c)
        owner += [min(i, len(targets) - 1) if i >= len(targets) else i] * len(c)
    sig = torch.cat(rows)
    if len(sig) > MAX_SIGNATURE:
        raise ValueError(f"the guard's signature would hold {len(sig)} columns (at most {MAX_SIGNATURE}): "
                         "fewer targets or templates")
    z = (sig - centre) @ factor
    sig = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    guard = PromptGuard(list(targets), sig, owner, centre, factor, 1.0, mode)
    pscores = np.array([s for s, _, _ in guard.score_columns(pcols)])
    guard.threshold = float(pscores.max() + margin) if len(pscores) else 1.0
    guard.stats = {"n_preserve": len(pres_prompts), "preserve_max": float(pscores.max()) if len(pscores) else None,
                   "preserve_p99": float(np.quantile(pscores, 0.99)) if len(pscores) else None,
                   "margin": margin, "signature_columns": len(sig), "templates": list(templates),
                   "extra_signature": [e for e in extra_signature if e not in targets]}
    return guard


def guard_for_spec(pipe, spec, preserve_prompts: Sequence[str] | None = None) -> PromptGuard:
    """The guard an erasure spec asks for (``spec.prompt_guard`` ≠ "off"): its targets in its templates (the solver
    defaults when the spec names none), calibrated on the base model's generic preserve set and the spec's
    preserve concepts."""
    from erasepro_core.preserve import generic_preserve_prompts
    from erasepro_core.spec import DEFAULT_TEMPLATES

    templates = list(spec.templates or DEFAULT_TEMPLATES)
    prompts = list(preserve_prompts) if preserve_prompts is not None else generic_preserve_prompts(pipe)
    targets = list(dict.fromkeys(e.target for e in spec.edits))
    # a preserve prompt that names a target would be calibrated as "not near it": drop it, as preservation does
    lowered = [t.lower() for t in targets]
    prompts = [p for p in prompts if not any(t in p.lower() for t in lowered)]
    return build_guard(pipe, targets, templates, prompts, list(spec.preserve), mode=spec.prompt_guard)
