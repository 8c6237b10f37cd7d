"""Running the text towers on prompts: token features at chosen positions, with the model as it is now.

A tower is run layer by layer (:class:`~erasepro_core.adapters.TextTower`), exactly as the pipeline's own
forward pass, so an applied delta (``applied_delta``) is seen like any other weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from erasepro_core.adapters import Adapter, adapter_for
from erasepro_core.features import n_bos, prompt_ids

# Padding positions after EOS feed cross-attention too, so preserve a few of them per prompt; further pads
# repeat the same token and differ only in position, so more add cost but little information.
N_PRESERVE_PADS = 8


@torch.no_grad()
def prompt_features(
    adapter: Adapter, prompts: list[str], layers: dict[int, list[int]], last_only: bool = False,
    batch: int = 256, sequence: bool = False,
) -> tuple[dict[tuple[int, int], torch.Tensor], torch.Tensor]:
    """Token features (positions 1..EOS plus a few pads, or the last token before EOS, or with ``sequence`` every
    position of the padded sequence, BOS included) of ``prompts``, model as is.

    Returns fc2-input columns per ``(tower, layer)`` for the requested layers and context columns.
    """
    fc2: dict[tuple[int, int], list[torch.Tensor]] = {}
    ctx_parts: list[list[torch.Tensor]] = []
    for ti, tower in enumerate(adapter.towers):
        rows = sorted((prompt_ids(tower.tokenizer, p) for p in prompts), key=len)  # similar lengths share a batch
        parts: list[torch.Tensor] = []
        for s in range(0, len(rows), batch):
            chunk = rows[s : s + batch]
            n_max = int(tower.tokenizer.model_max_length)
            longest = n_max if sequence else max(len(r) for r in chunk) + (0 if last_only else N_PRESERVE_PADS)
            length = tower.length_for(min(n_max, longest))
            if tower.pooled:  # a pooled site reads the EOS state only
                sel = [(r, len(ids) - 1) for r, ids in enumerate(chunk)]
            elif sequence:
                sel = [(r, p) for r in range(len(chunk)) for p in range(length)]
            elif last_only:
                sel = [(r, len(ids) - 2) for r, ids in enumerate(chunk)]
            else:
                first = n_bos(tower.tokenizer)
                sel = [(r, p) for r, ids in enumerate(chunk)
                       for p in range(first, min(len(ids) + N_PRESERVE_PADS, length))]
            rr = torch.tensor([a for a, _ in sel])
            pp = torch.tensor([b for _, b in sel])
            h = tower.embed(tower.pad(chunk, length))
            for i in range(tower.n_context_layers):
                h, xin = tower.layer(i, h)
                if i in layers.get(ti, []):
                    fc2.setdefault((ti, i), []).append(xin[rr, pp].T.float())
            parts.append(tower.to_context(h)[rr, pp].T.float())
        ctx_parts.append(parts)
    ctx = torch.cat([torch.cat(p, 1) for p in ctx_parts], 0)
    return {k: torch.cat(v, 1) for k, v in fc2.items()}, ctx


def last_token_positions(pipe_or_adapter: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Per prompt, the position of its last token before EOS (the subject, under the ``last`` policy); in a
    segmented space (SD-3) that position in every segment, counted along the sequence the sites read."""
    adapter = pipe_or_adapter if isinstance(pipe_or_adapter, Adapter) else adapter_for(pipe_or_adapter)
    out: list[list[int]] = [[] for _ in prompts]
    start = 0
    for seg in adapter.segments or [adapter]:
        tok = seg.towers[0].tokenizer
        for r, p in enumerate(prompts):
            out[r].append(start + max(len(prompt_ids(tok, p)) - 2, 0))
        start += int(tok.model_max_length)
    return out


@torch.no_grad()
def context_features(pipe_or_adapter: Any, prompts: Sequence[str],
                     positions: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """Context-space features c (what the UNet's K/V read) of ``prompts`` at ``positions``, model as it is now.

    ``positions[i]`` are token positions of prompt i (0 = BOS, or the first word without one; positions past EOS
    are padding, up to the tokenizer's length); default: each prompt's last token before EOS. Returns a float32
    (d_ctx × Σ|positions|) matrix, columns in prompt order, on the model's device — the same columns ``erase``
    constrains, so ``erase(..., extra_context=(X, Y))`` accepts them directly. Towers (SDXL) concatenate along
    features; for FLUX these are the T5 token features (the primary context space); for SD-3 positions count
    along the joint sequence (CLIP's 77 tokens, then T5's), each segment's features zero-padded to the width.
    """
    adapter = pipe_or_adapter if isinstance(pipe_or_adapter, Adapter) else adapter_for(pipe_or_adapter)
    prompts = list(prompts)
    if positions is None:
        positions = last_token_positions(adapter, prompts)
    if len(positions) != len(prompts):
        raise ValueError(f"positions: one list per prompt ({len(prompts)}), got {len(positions)}")
    if adapter.segments:
        return _segmented_features(adapter, prompts, positions)
    parts = []
    for tower in adapter.towers:
        n_max = int(tower.tokenizer.model_max_length)
        rows = [prompt_ids(tower.tokenizer, p) for p in prompts]
        rr, pp = [], []
        for r, pos in enumerate(positions):
            for p in pos:
                if not 0 <= int(p) < n_max:
                    raise ValueError(f"positions: {p} is outside 0..{n_max - 1} (prompt {r})")
                rr.append(r)
                pp.append(int(p))
        length = tower.length_for(max([len(r) for r in rows] + [p + 1 for p in pp] + [1]))
        h = tower.embed(tower.pad(rows, length))
        for i in range(tower.n_context_layers):
            h, _ = tower.layer(i, h)
        ctx = tower.to_context(h)
        parts.append(ctx[torch.tensor(rr, dtype=torch.long), torch.tensor(pp, dtype=torch.long)].T.float())
    return torch.cat(parts, 0)


def _segmented_features(adapter: Adapter, prompts: list[str], positions: Sequence[Sequence[int]]) -> torch.Tensor:
    """:func:`context_features` of a segmented space: each position read from the segment it falls in."""
    bounds, start = [], 0
    for seg in adapter.segments:
        n = int(seg.towers[0].tokenizer.model_max_length)
        bounds.append((start, start + n))
        start += n
    local: list[list[list[int]]] = [[[] for _ in prompts] for _ in adapter.segments]
    order: list[list[int]] = [[] for _ in adapter.segments]  # each segment's columns' places in the output
    col = 0
    for r, pos in enumerate(positions):  # a segment's columns come out prompt by prompt, as they are visited here
        for p in pos:
            s = next((k for k, (a, b) in enumerate(bounds) if a <= int(p) < b), None)
            if s is None:
                raise ValueError(f"positions: {p} is outside 0..{start - 1} (prompt {r})")
            local[s][r].append(int(p) - bounds[s][0])
            order[s].append(col)
            col += 1
    device = adapter.towers[0].device
    out = torch.zeros(adapter.context_width, col, device=device)
    for s, seg in enumerate(adapter.segments):
        if order[s]:
            feats = context_features(seg, prompts, local[s])
            out[: feats.shape[0], torch.tensor(order[s], dtype=torch.long, device=device)] = feats.to(device)
    return out
