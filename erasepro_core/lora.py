"""Exact LoRA export of a delta: every edited weight written as  W = W_o + up · down  at the edit's own rank.

The factors are recovered from the edit itself by a rank-revealing factorisation of D = W − W_o (float64):
the smallest rank r whose truncated SVD leaves ‖D − up·down‖_F ≤ u·‖W‖_F, u the unit roundoff of the delta's
dtype (2⁻²⁴ for float32). Every edit ErasePro writes is W = fl(W_o + Δ) with rank Δ ≤ the site's constraint
rank, and the rounding error e = W − W_o − Δ has ‖e‖_F ≤ u‖W‖_F: so Δ itself meets the bound, r never exceeds
the edit's rank, and the LoRA reproduces the delta's weights to within the delta's own rounding. Nothing is
truncated beyond that bound; a site whose exact rank makes the LoRA larger than the dense weight is still
written exactly (and the model card says so).

Where the report gives the site's rank r₀, a randomised range finder with r₀ + 8 columns is tried first and
kept only when its residual meets the same bound; otherwise (or without r₀) a full SVD decides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from erasepro_core.adapters import resolve_parameter
from erasepro_core.delta import Delta, _as_delta, _targets, save_tensors
from erasepro_core.formats import FormatError, check_format, kohya_name, peft_name

PEFT_WEIGHTS = "pytorch_lora_weights.safetensors"  # the name diffusers' load_lora_weights(folder) looks for
KOHYA_WEIGHTS = "erasepro_lora.safetensors"
_OVERSAMPLE = 8


@dataclass
class Factors:
    """One site's exact LoRA: ``up`` (d_out × r) · ``down`` (r × d_in); ``error`` = ‖D − up·down‖_F / ‖W‖_F."""

    up: torch.Tensor
    down: torch.Tensor
    error: float
    bound: float  # u, the unit roundoff the error is held to

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


def unit_roundoff(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps) / 2


def factorise_site(w_new: torch.Tensor, w_old: torch.Tensor, rank_hint: int | None = None, seed: int = 0
                   ) -> Factors:
    """Exact low-rank factors of D = w_new − w_old (see the module docstring for the tolerance)."""
    d = w_new.double() - w_old.double()
    u = unit_roundoff(w_new.dtype)
    tol = u * float(torch.linalg.matrix_norm(w_new.double()))
    m, n = d.shape
    left, s, right, floor_sq = None, None, None, 0.0
    if rank_hint is not None and 2 * (rank_hint + _OVERSAMPLE) < min(m, n):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        omega = torch.randn(n, rank_hint + _OVERSAMPLE, dtype=torch.float64, generator=gen).to(d.device)
        q = torch.linalg.qr(d @ omega).Q
        b = q.T @ d
        floor_sq = float(torch.linalg.matrix_norm(d - q @ b)) ** 2  # what the range misses, added to every tail
        if floor_sq <= tol**2:
            ub, s, right = torch.linalg.svd(b, full_matrices=False)
            left = q @ ub
    if left is None:
        floor_sq = 0.0
        left, s, right = torch.linalg.svd(d, full_matrices=False)
    # tail[r] = ‖D − D_r‖_F², the energy past the first r singular values (plus what the range finder missed)
    tail = torch.flip(torch.cumsum(torch.flip(s**2, [0]), 0), [0]).tolist() + [0.0]
    r = next(k for k in range(len(tail)) if tail[k] + floor_sq <= tol**2)
    root = s[:r].sqrt()  # split the singular values evenly: up and down are equally scaled (fp16-safe)
    up = (left[:, :r] * root).to(w_new.dtype)
    down = (root[:, None] * right[:r]).to(w_new.dtype)
    wn = float(torch.linalg.matrix_norm(w_new.double())) or 1.0
    err = float(torch.linalg.matrix_norm(d - up.double() @ down.double())) / wn
    return Factors(up=up.contiguous(), down=down.contiguous(), error=err, bound=u)


def factorise(pipe: Any, delta_or_path: Delta | str | os.PathLike) -> dict[str, Factors]:
    """Exact LoRA factors of every edited weight of ``delta`` against ``pipe``'s (unedited) weights.
    Sites the edit left unchanged (rank 0) are omitted."""
    delta = _as_delta(delta_or_path)
    params = _targets(pipe, delta)  # checks the base fingerprint: D is only meaningful against the right W_o
    ranks = {s["site"]: s.get("rank") for s in delta.report.get("sites", []) if "site" in s}
    out = {}
    with torch.no_grad():
        for i, (key, p) in enumerate(sorted(params.items())):
            hint = ranks.get(key)
            f = factorise_site(delta.tensors[key].to(p.device), p.detach(), int(hint) if hint else None, seed=i)
            if f.rank:
                out[key] = Factors(f.up.cpu(), f.down.cpu(), f.error, f.bound)
    return out


def _layers_per_block(pipe: Any) -> int | None:
    unet = getattr(pipe, "unet", None)
    lpb = getattr(getattr(unet, "config", None), "layers_per_block", None)
    return lpb if isinstance(lpb, int) else None


def lora_state_dict(pipe: Any, delta_or_path: Delta | str | os.PathLike, fmt: str = "lora"
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Factors]]:
    """The LoRA tensors of ``delta`` in ``fmt`` (``lora``: diffusers/PEFT keys; ``kohya``), and the factors.
    Raises :class:`FormatError` naming every site the format cannot carry (nothing is dropped)."""
    delta = _as_delta(delta_or_path)
    family = delta.base.get("family") or delta.report.get("family", "")
    if fmt not in ("lora", "kohya"):
        raise FormatError(f"{fmt!r} is not a LoRA format (lora or kohya)")
    lpb = _layers_per_block(pipe)
    if fmt == "kohya" and family == "sdxl" and lpb is None:
        raise FormatError("the SDXL UNet's layers_per_block is not one number: no sgm block names for kohya keys")
    check_format(family, delta.tensors, fmt, lpb)
    factors = factorise(pipe, delta)
    tensors: dict[str, torch.Tensor] = {}
    for key, f in factors.items():
        if fmt == "lora":
            name = peft_name(family, key)
            if name.startswith(("unet.", "transformer.")):
                tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"] = f.down, f.up
            else:
                # Text encoders: diffusers' own text-encoder naming. Its loader infers the layout of a text
                # encoder's keys from attention projections, so PEFT names on mlp.fc2 alone fail to load
                # ("Could not automatically infer state dict type", diffusers ≤ 0.42); ComfyUI reads both.
                tensors[f"{name}.lora_linear_layer.down.weight"] = f.down
                tensors[f"{name}.lora_linear_layer.up.weight"] = f.up
        else:
            name = kohya_name(family, key, lpb)
            tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"] = f.down, f.up
            tensors[f"{name}.alpha"] = torch.tensor(float(f.rank))  # alpha = r: scale alpha/r = 1
    return tensors, factors


def export_checkpoint(pipe: Any, delta_or_path: Delta | str | os.PathLike, out: str | os.PathLike, fmt: str = "lora",
           *, evaluation: dict[str, Any] | None = None) -> Path:
    """Write ``delta`` as a checkpoint folder ``out`` in ``fmt`` (``lora``, ``kohya`` or ``diffusers``), with a
    model card (README.md). ``lora``: ``pipe.load_lora_weights(out)`` loads it; ``kohya``: drop the
    ``.safetensors`` into ComfyUI's ``models/loras`` or A1111's ``models/Lora``. Returns ``out``."""
    from erasepro_core.card import model_card

    delta = _as_delta(delta_or_path)
    out = Path(out)
    if fmt == "diffusers":
        from erasepro_core.delta import applied_delta
        from erasepro_core.pipeline import save_pipeline

        check_format(delta.base.get("family", ""), delta.tensors, fmt)
        with applied_delta(pipe, delta):
            save_pipeline(pipe, out)
        (out / "README.md").write_text(model_card(delta, fmt, evaluation=evaluation), encoding="utf-8")
        return out
    tensors, factors = lora_state_dict(pipe, delta, fmt)
    meta = {"format": "pt", "erasepro_fingerprint": delta.fingerprint, "erasepro_format": fmt,
            "erasepro_library_version": delta.library_version}
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(out / (PEFT_WEIGHTS if fmt == "lora" else KOHYA_WEIGHTS), tensors, meta)
    (out / "README.md").write_text(model_card(delta, fmt, factors=factors, evaluation=evaluation), encoding="utf-8")
    return out


def merged_weight(pipe: Any, key: str, f: Factors) -> torch.Tensor:
    """W_o + up·down for one site (float64): what a loader that fuses the LoRA computes."""
    w = resolve_parameter(pipe, key).detach().double().cpu()
    return w + f.up.double() @ f.down.double()
