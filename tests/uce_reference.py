"""UCE as its authors' two public scripts compute it, re-derived literally for the parity tests.

Written from reading ``rohitgandikota/unified-concept-editing`` (no code copied): the current
``trainscripts/uce_sd_erase.py`` (``uce2025``) and the paper-era ``train-scripts/train_erase.py`` (``uce2023``).
Both build, for every cross-attention K/V weight W_o of the UNet,

    W = (λ W_o + s_e Σ v* cᵀ + s_p Σ W_o c_p c_pᵀ) (λ I + s_e Σ c cᵀ + s_p Σ c_p c_pᵀ)⁻¹,   v* = W_o c*,

and differ only in which text-encoder states c, c*, c_p enter the sums. Everything here is the textbook way:
the pipeline's own tokenizer (padded to its full length, as the scripts do) and text encoder, one prompt at a
time, the sums accumulated term by term, the inverse taken explicitly (float64, so the comparison measures the
protocol, not rounding).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def _encode(pipe, prompt: str) -> tuple[torch.Tensor, int]:
    """The padded sequence's final states (L × d) and the script's ``attention_mask.sum() - 2`` index."""
    tok = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    states = pipe.text_encoder(tok.input_ids)[0][0].double()
    return states, int(tok.attention_mask.sum()) - 2


def kv_modules(pipe) -> dict[str, torch.nn.Linear]:
    """Every ``attn2`` ``to_k``/``to_v`` of the UNet, keyed as the delta stores them."""
    return {f"unet.{name}.weight": m for name, m in pipe.unet.named_modules()
            if "attn2" in name and (name.endswith("to_k") or name.endswith("to_v"))}


def _solve(w_o: torch.Tensor, erase: list[tuple[torch.Tensor, torch.Tensor]],
           keep: list[torch.Tensor], lam: float, s_e: float, s_p: float) -> torch.Tensor:
    """Both scripts' normal equations: ``erase`` holds (c, c*) column pairs, ``keep`` preserve columns."""
    mat1 = lam * w_o
    mat2 = lam * torch.eye(w_o.shape[1], dtype=torch.float64)
    for c, c_star in erase:
        mat1 = mat1 + s_e * torch.outer(w_o @ c_star, c)
        mat2 = mat2 + s_e * torch.outer(c, c)
    for c in keep:
        mat1 = mat1 + s_p * torch.outer(w_o @ c, c)
        mat2 = mat2 + s_p * torch.outer(c, c)
    return mat1 @ torch.linalg.inv(mat2)


def uce2025(pipe, edits: list[str], guides: list[str], preserve: list[str], *, lam: float = 0.5,
            erase_scale: float = 1.0, preserve_scale: float = 1.0,
            templates: list[str] | None = None) -> dict[str, torch.Tensor]:
    """``uce_sd_erase.py``: each concept's state at ``mask.sum() - 2`` (its last word token; BOS for ''), one
    column per erase/guide prompt and per named preserve concept. ``templates``: their ``--expand_prompts``,
    applied to erase and guide alike (never to preserve concepts)."""
    if templates:
        edits, guides = ([t.format(c) for c in concepts for t in templates] for concepts in (edits, guides))
        # (the script appends the expansions after the bare list; the sums do not depend on the order)
    last = {}
    for p in [*edits, *guides, *preserve]:
        states, idx = _encode(pipe, p)
        last[p] = states[idx]
    out = {}
    for key, m in kv_modules(pipe).items():
        w_o = m.weight.detach().double()
        out[key] = _solve(w_o, [(last[e], last[g]) for e, g in zip(edits, guides, strict=True)],
                          [last[p] for p in preserve], lam, erase_scale, preserve_scale)
    return out


def uce2023(pipe, edits: list[str], guides: list[str], preserve: list[str], *, lam: float = 0.5,
            erase_scale: float = 1.0, preserve_scale: float | None = None,
            templates: list[str] | None = None) -> dict[str, torch.Tensor]:
    """``train_erase.py`` (technique 'replace'): old prompt from its last word token i, guide from its last word
    token j, position by position to the end, both cut to L − max(i, j) columns; an empty guide becomes ' '.
    Preserve: '' and each concept at all L positions; s_p = max(0.1, 1/N) over those N prompts unless given.
    ``templates``: their ``--add_prompts``; every phrasing of a concept is guided to the *bare* guide."""
    if templates:
        edits, guides = [t.format(c) for c in edits for t in templates], [g for g in guides for _ in templates]
    guides = [g if g else " " for g in guides]
    retain = ["", *preserve]
    s_p = max(0.1, 1 / len(retain)) if preserve_scale is None else preserve_scale
    pairs = []
    for old, new in zip(edits, guides, strict=True):
        h_old, i = _encode(pipe, old)
        h_new, j = _encode(pipe, new)
        far, n = max(i, j), h_old.shape[0]
        h_old, h_new = h_old[i : n - (far - i)], h_new[j : n - (far - j)]
        pairs += list(zip(h_old, h_new, strict=True))
    keep = [c for r in retain for c in _encode(pipe, r)[0]]
    return {key: _solve(m.weight.detach().double(), pairs, keep, lam, erase_scale, s_p)
            for key, m in kv_modules(pipe).items()}


def edit_gap(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], pipe) -> dict[str, float]:
    """Per K/V site: ‖W_got − W_want‖ / ‖W_want − W_o‖ (the error relative to the edit itself)."""
    out = {}
    for key, m in kv_modules(pipe).items():
        w_o = m.weight.detach().double()
        out[key] = float((got[key].double() - want[key]).norm() / (want[key] - w_o).norm())
    return out
