"""The prompt guard: a detector, built from an erasure's own closed-form features, that flags prompts whose
context features come near an erased concept (threat model T1, docs/method.md).

Features are the base text encoder's context columns (what every cross-attention K/V site reads) of every window
of 1..k consecutive prompt tokens encoded *on its own* (``<bos> window <eos>``: its last token and EOS), so a name
reads the same wherever a prompt puts it; k is the longest target's token count. They are compared after
whitening by the preserve set (the solver's preserve metric): ``z = M^-½ (c − μ) / ‖·‖``, ``M = C̄ + α·tr(C̄)/d·I``
with ``μ``, ``C̄`` the mean and covariance of the preserve windows. An erasure's *signature* is every window of its
targets; a prompt is flagged when some window has ``z·t_j ≥ τ_j`` for a signature column ``t_j``, where
``τ_j = c_j + m·(1 − c_j)``, ``c_j`` column j's largest cosine with any calibration window (preserve prompts and
concepts, common vocabulary words, prompt modifiers) and m the relative margin: a window must close m of the
distance from the nearest neutral window to the signature. So no calibration prompt is flagged by construction,
and a column the calibration set already holds (``c_j > 0.95``: a name piece shared with another name) is
dropped. Held-out false positives are measured, not tuned (docs/benchmarks.md).

What it needs is stored beside the delta: ``guard.safetensors`` (signature, thresholds, centre, whitening) and
``guard.json`` (targets, window length, mode, calibration summary). Off by default (``prompt_guard="off"``);
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
#: Relative margin m: τ_j = c_j + m·(1 − c_j). Chosen on canvas validation prompts (seed 1, n = 60 per set): the
#: smallest with at most 2 % held-out false positives at N = 1 and 10 for both kinds. A margin added to c_j
#: instead (0.15 before) needs 0.2 at ten characters, where it loses detection of styles, whose c_j sit near 1.
DEFAULT_MARGIN = 0.4
#: Common vocabulary words the thresholds are also calibrated on (:func:`common_words`): measured on canvas, a
#: fragment of a name ("vinter") otherwise came near quality tags ("high quality", "4k"), flagging 14 % of held-out
#: prompts at ten styles; 2,000 words brought that to 3 % with no loss of detection (docs/benchmarks.md).
DEFAULT_NEUTRAL_WORDS = 2000
#: Prompt boilerplate (quality, medium and lighting tags) the thresholds are also calibrated on, as phrases in a
#: comma-separated prompt: a name's fragment can come near the window ", high quality" while near neither word alone
#: (canvas, ten styles). The canvas world's held-out frames ("masterpiece", "sharp focus", "award winning") are left
#: out on purpose, so that its held-out false positives stay a measurement.
PROMPT_MODIFIERS: tuple[str, ...] = (
    "high quality", "best quality", "highly detailed", "ultra detailed", "detailed", "intricate", "4k", "8k", "hd",
    "trending", "trending on artstation", "digital art", "concept art", "illustration", "oil painting", "watercolor",
    "sketch", "photorealistic", "realistic", "professional photo", "octane render", "unreal engine", "studio lighting",
    "cinematic lighting", "soft lighting", "vibrant colors", "beautiful", "stunning", "wallpaper", "bokeh",
)
DEFAULT_RIDGE = 0.01  # ridge of the preserve whitening, relative to the mean variance (the solver's alpha)
#: Signature columns whose largest calibration cosine c_j exceeds this are dropped (not distinct from the
#: calibration set).
MAX_THRESHOLD = 0.95
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
def window_columns(pipe, prompts: Sequence[str], max_tokens: int, batch: int = 2048
                   ) -> tuple[list[torch.Tensor], list[list[str]]]:
    """Per prompt, every window of 1..``max_tokens`` consecutive tokens encoded *on its own*
    (``<bos> window <eos>``), its last-token and EOS context columns: the words' features without the rest of the
    prompt's context, so a name reads the same wherever the prompt puts it. Returns (columns (2·windows, d),
    window text per column pair)."""
    tok, enc = pipe.tokenizer, pipe.text_encoder
    n_max = int(tok.model_max_length)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rows: list[list[int]] = []
    owner: list[int] = []
    texts: list[list[str]] = []
    for k, p in enumerate(prompts):
        ids = tok(p, truncation=True, max_length=n_max, add_special_tokens=False)["input_ids"][: n_max - 2]
        names: list[str] = []
        for i in range(len(ids)):
            for j in range(i + 1, min(len(ids), i + max_tokens) + 1):
                rows.append([tok.bos_token_id, *ids[i:j], tok.eos_token_id])
                owner.append(k)
                names.append(tok.decode(ids[i:j]).strip())
        texts.append(names)
    feats: list[torch.Tensor] = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        length = max(len(r) for r in chunk)
        x = torch.tensor([r + [pad] * (length - len(r)) for r in chunk], device=enc.device)
        ctx = enc(x)[0].detach().double().cpu()
        ends = torch.tensor([len(r) - 1 for r in chunk])
        ar = torch.arange(len(chunk))
        feats.append(torch.stack([ctx[ar, ends - 1], ctx[ar, ends]], 1))  # (n, 2, d): last token, EOS
    allf = torch.cat(feats) if feats else torch.zeros(0, 2, enc.config.hidden_size, dtype=torch.float64)
    own = torch.tensor(owner, dtype=torch.long)
    return [allf[own == k].reshape(-1, allf.shape[-1]) for k in range(len(prompts))], texts


@dataclass
class PromptGuard:
    """A detector of prompts near erased concepts (see the module docstring for the maths)."""

    targets: list[str]
    signature: torch.Tensor  # (m, d) unit rows z
    owner: list[int]  # target index of each signature row
    centre: torch.Tensor  # (d,)
    factor: torch.Tensor  # (d, d): z = normalise((c − centre) @ factor)
    thresholds: torch.Tensor  # (m,) per signature row: flag when cos ≥ it
    max_tokens: int = 8
    mode: str = "refuse"
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return float(self.thresholds.min()) if len(self.thresholds) else 1.0

    def _z(self, c: torch.Tensor) -> torch.Tensor:
        z = (c - self.centre) @ self.factor
        return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def margins(self, cols: list[torch.Tensor]) -> list[tuple[float, int, int]]:
        """Per prompt (max_j (cos_j − τ_j)/(1 − τ_j) over its window columns, best column, signature row): ≥ 0 is
        flagged. Relative to the room left above τ_j, so on a guard built with margin 0 a score ≥ m is a flag at
        margin m (how the benchmark sweeps margins)."""
        out = []
        for c in cols:
            if len(c) == 0:
                out.append((-2.0, 0, 0))
                continue
            s = (self._z(c) @ self.signature.T - self.thresholds) / (1 - self.thresholds)
            flat = int(s.argmax())
            out.append((float(s.flatten()[flat]), flat // s.shape[1], flat % s.shape[1]))
        return out

    def scores(self, pipe, prompts: Sequence[str]) -> np.ndarray:
        """Per prompt its relative margin over the threshold (flagged when ≥ 0; see :meth:`margins`)."""
        cols, _ = window_columns(pipe, prompts, self.max_tokens)
        return np.array([m for m, _, _ in self.margins(cols)])

    def flags(self, pipe, prompts: Sequence[str]) -> np.ndarray:
        return self.scores(pipe, prompts) >= 0

    def check(self, pipe, prompt: str) -> Verdict:
        cols, texts = window_columns(pipe, [prompt], self.max_tokens)
        margin, col, row = self.margins(cols)[0]
        tau = float(self.thresholds[row]) if len(self.thresholds) else 1.0
        return Verdict(margin >= 0, tau + margin * (1 - tau), tau, self.targets[self.owner[row]],
                       texts[0][col // 2] if texts[0] else None)

    # ------------------------------------------------------------------------------------ storage
    def save(self, directory: str | Path) -> tuple[Path, Path]:
        from erasepro_core.delta import save_tensors

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {"signature": self.signature.float().contiguous(), "centre": self.centre.float().contiguous(),
                   "factor": self.factor.float().contiguous(), "thresholds": self.thresholds.float().contiguous(),
                   "owner": torch.tensor(self.owner, dtype=torch.int32)}
        save_tensors(d / GUARD_TENSORS, tensors)
        meta = {"format": FORMAT_VERSION, "targets": self.targets, "max_tokens": self.max_tokens, "mode": self.mode,
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
        sig, owner, tau = t["signature"].double(), t["owner"].tolist(), t["thresholds"].double()
        if sig.ndim != 2 or len(owner) != len(sig) or len(tau) != len(sig) \
                or t["factor"].shape != (sig.shape[1], sig.shape[1]) or max(owner, default=0) >= len(meta["targets"]):
            raise GuardFormatError("guard tensors do not fit together")
        return cls(list(meta["targets"]), sig, owner, t["centre"].double(), t["factor"].double(), tau,
                   int(meta.get("max_tokens", 8)), str(meta.get("mode", "refuse")), dict(meta.get("stats") or {}))


def kv_metric_factor(pipe) -> torch.Tensor:
    """G^½ (d × d) of the K/V metric ``G = Σ_s W_o,sᵀ W_o,s``, so ‖(c)ᵀ G^½‖ = ‖W_o c‖ summed over sites."""
    from erasepro_core.harden import kv_gram, kv_weights

    g = kv_gram(kv_weights(_single_tower(pipe)))
    evals, evecs = torch.linalg.eigh(g)
    return evecs * evals.clamp_min(0).sqrt()


def preserve_whitening(centred: torch.Tensor, ridge: float) -> torch.Tensor:
    """M^-½ with M = C̄ + ridge·tr(C̄)/d·I, C̄ the preserve columns' covariance (the solver's preserve metric):
    directions every preserve prompt varies along (phrasing, other concepts) shrink, the target's own grow."""
    cov = centred.T @ centred / max(len(centred), 1)
    d = cov.shape[0]
    m = cov + ridge * float(torch.trace(cov)) / d * torch.eye(d, dtype=cov.dtype)
    evals, evecs = torch.linalg.eigh(m)
    return evecs * evals.clamp_min(1e-12).rsqrt()


def build_guard(pipe, targets: Sequence[str], preserve_prompts: Sequence[str], preserve_concepts: Sequence[str] = (),
                *, mode: str = "refuse", margin: float = DEFAULT_MARGIN, extra_signature: Sequence[str] = (),
                ridge: float = DEFAULT_RIDGE, max_threshold: float = MAX_THRESHOLD,
                neutral_words: int = DEFAULT_NEUTRAL_WORDS, modifiers: Sequence[str] = PROMPT_MODIFIERS,
                min_letters: int = 1) -> PromptGuard:
    """The guard of an erasure of ``targets``: signature = every window of each target's tokens (and of
    ``extra_signature``, e.g. the concept expansion's phrasings), whitened by the preserve windows' covariance;
    each signature column's threshold τ_j = its largest cosine with any window of ``preserve_prompts`` and
    ``preserve_concepts``, any of the ``neutral_words`` most common vocabulary words (of ``min_letters`` or more) or
    any window of the prompt ``modifiers`` in a comma-separated prompt, c_j, raised by the relative ``margin``:
    τ_j = c_j + margin·(1 − c_j); columns with c_j > ``max_threshold`` (a window the calibration set also holds,
    such as a name's first piece shared with another name) are dropped as not distinctive."""
    if not 0 <= margin < 1:
        raise ValueError("margin must be in [0, 1): the share of the distance from the nearest calibration window "
                         "to the signature a prompt must close")
    if mode not in GUARD_MODES[1:]:
        raise ValueError(f"mode must be one of {GUARD_MODES[1:]}")
    _single_tower(pipe)
    tok = pipe.tokenizer
    names = list(dict.fromkeys([*targets, *extra_signature]))
    max_tokens = max(len(tok(n, add_special_tokens=False)["input_ids"]) for n in names)
    pres = list(preserve_prompts) + list(preserve_concepts)
    pcols, _ = window_columns(pipe, pres, max_tokens)
    allp = torch.cat([c for c in pcols if len(c)])
    centre = allp.mean(0)
    factor = preserve_whitening(allp - centre, ridge)
    tcols, texts = window_columns(pipe, names, max_tokens)
    rows, owner, kept_text = [], [], []
    for i, (c, tx) in enumerate(zip(tcols, texts, strict=True)):
        rows.append(c)
        owner += [i if i < len(targets) else _nearest_target(names[i], targets)] * len(c)
        kept_text += [w for w in tx for _ in (0, 1)]
    sig = torch.cat(rows)
    if len(sig) > MAX_SIGNATURE:
        raise ValueError(f"the guard's signature would hold {len(sig)} columns (at most {MAX_SIGNATURE}): "
                         "fewer or shorter targets")
    z = (sig - centre) @ factor
    sig = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    calib = [allp]
    if neutral_words:
        ncols, _ = window_columns(pipe, common_words(tok, neutral_words, names, min_letters), 1)
        calib += [c for c in ncols if len(c)]
    if modifiers:
        phrases = [form.format(m) for m in modifiers for form in ("a picture, {}", "{}, a picture")]
        mcols, _ = window_columns(pipe, phrases, max_tokens)
        calib += [c for c in mcols if len(c)]
    zp = (torch.cat(calib) - centre) @ factor
    zp = zp / zp.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    tau = torch.full((len(sig),), -1.0, dtype=torch.float64)
    for i in range(0, len(zp), 8192):
        tau = torch.maximum(tau, (zp[i : i + 8192] @ sig.T).max(0).values)
    keep = tau <= max_threshold
    tau = tau + margin * (1 - tau)
    if not bool(keep.any()):
        raise ValueError("no window of the targets is distinct from the preserve set: a guard would flag "
                         "preserve prompts (name the targets more specifically)")
    guard = PromptGuard(list(targets), sig[keep], [o for o, k in zip(owner, keep.tolist(), strict=True) if k],
                        centre, factor, tau[keep], max_tokens, mode)
    guard.stats = {"n_preserve": len(pres), "margin": margin, "ridge": ridge, "max_threshold": max_threshold,
                   "neutral_words": neutral_words, "min_letters": min_letters, "modifiers": len(modifiers),
                   "signature_columns": int(keep.sum()), "dropped_columns": int((~keep).sum()),
                   "signature_windows": sorted({w for w, k in zip(kept_text, keep.tolist(), strict=True) if k}),
                   "extra_signature": [e for e in extra_signature if e not in targets],
                   "threshold_min": float(tau[keep].min()), "threshold_max": float(tau[keep].max())}
    return guard


def common_words(tok, n: int, exclude: Sequence[str] = (), min_letters: int = 1) -> list[str]:
    """The ``n`` most frequent whole words of a CLIP BPE vocabulary (alphabetic ``…</w>`` tokens of
    ``min_letters`` or more letters in merge order, which follows corpus frequency), less any word of ``exclude``:
    neutral prompt words. Single letters count: "x" is a common prompt word ("an x shape") and a name's last
    piece ("zorblax" ends in ``x</w>``)."""
    skip = {w for e in exclude for w in e.lower().split()}
    out: list[str] = []
    for token, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]):
        word = token[:-4] if token.endswith("</w>") else None
        # CLIP lowercases prompts, so its upper-case byte tokens never occur in one
        if word and len(word) >= min_letters and word.isalpha() and word.islower() and word not in skip:
            out.append(word)
            if len(out) == n:
                break
    return out


def _nearest_target(name: str, targets: Sequence[str]) -> int:
    """The target an extra signature phrase belongs to: the one sharing most characters (a report label only)."""
    return max(range(len(targets)), key=lambda i: len(set(name) & set(targets[i])))


def guard_for_spec(pipe, spec, preserve_prompts: Sequence[str] | None = None) -> PromptGuard:
    """The guard an erasure spec asks for (``spec.prompt_guard`` ≠ "off"): its targets, calibrated on the base
    model's generic preserve set (or ``preserve_prompts``) and the spec's preserve concepts."""
    from erasepro_core.preserve import generic_preserve_prompts

    prompts = list(preserve_prompts) if preserve_prompts is not None else generic_preserve_prompts(pipe)
    targets = list(dict.fromkeys(e.target for e in spec.edits))
    # a preserve prompt that names a target would be calibrated as "not near it": drop it, as preservation does
    lowered = [t.lower() for t in targets]
    prompts = [p for p in prompts if not any(t in p.lower() for t in lowered)]
    return build_guard(pipe, targets, prompts, [c for c in spec.preserve if c.lower() not in lowered],
                       mode=spec.prompt_guard)
