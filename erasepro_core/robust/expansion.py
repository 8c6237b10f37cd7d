"""Concept expansion in closed form: sweep candidate inputs -- windows of the name's own tokens, the tokenizer's
whole-word vocabulary and typo neighbours of the name -- for those whose context features land nearest the
target's, and erase them as targets too (same anchor), the preserve set guarding unrelated neighbours.

A candidate ``w`` is encoded on its own (``<bos> w <eos>``, the guard's window features) and scored by its distance
to the target in the K/V metric ``G = Σ_s W_o,sᵀ W_o,s`` (what the cross-attention reads):
``d(w) = Σ_{p ∈ {last, EOS}} ‖c_p(w) − c_p(target)‖²_G / ‖c_p(target)‖²_G``. Candidates nearer to a preserve concept
than to the target are dropped (the edit must not reach them); the ``k`` nearest remaining ones are added.
No image is drawn; one text-encoder pass per candidate.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from erasepro_core.robust.t1 import misspellings

VOCAB_SAMPLE = 4000  # whole-word vocabulary tokens swept per target (sampled; the full table is ~30k)


def candidates(tokenizer, name: str, seed: int = 101) -> list[str]:
    """Windows of the name's tokens (2+ tokens, or single whole words), typo neighbours (their own seed, not the
    T1 suite's) and sampled whole-word vocabulary tokens."""
    ids = tokenizer(name, add_special_tokens=False)["input_ids"]
    out: list[str] = []
    for i in range(len(ids)):
        for j in range(i + 1, len(ids) + 1):
            text = tokenizer.decode(ids[i:j]).strip()
            if text != name and (j - i >= 2 or " " not in text):
                out.append(text)
    out += misspellings(name, random.Random(seed), 60)
    vocab = [t[:-4] for t in tokenizer.get_vocab() if t.endswith("</w>") and t[:-4].isalpha() and t[:-4].isascii()
             and len(t) - 4 >= 3]
    rng = random.Random(seed)
    out += rng.sample(sorted(vocab), min(VOCAB_SAMPLE, len(vocab)))
    words = set(name.split())
    return list(dict.fromkeys(c for c in out if c and c != name and c not in words))


@torch.no_grad()
def _features(pipe, texts: Sequence[str], half: torch.Tensor) -> torch.Tensor:
    from erasepro_core.guard import window_columns

    ids = [pipe.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    # the whole text as one window: its last token and EOS columns
    cols, _ = window_columns(pipe, list(texts), max(len(i) for i in ids))
    whole = torch.stack([c[-2:] if len(i) == 1 else _whole(c, len(i)) for c, i in zip(cols, ids, strict=True)])
    return whole @ half  # (n, 2, d) in the G metric


def _whole(c: torch.Tensor, n: int) -> torch.Tensor:
    # window_columns orders windows by start then length: the window (0, n) is the n-th pair
    return c[2 * (n - 1) : 2 * n]


def expand(pipe, target: str, preserve: Sequence[str], k: int, seed: int = 101) -> list[dict[str, Any]]:
    """The ``k`` candidates nearest ``target`` (and nearer it than any preserve concept), nearest first, each with
    its distance."""
    from erasepro_core.guard import kv_metric_factor

    half = kv_metric_factor(pipe)
    cands = candidates(pipe.tokenizer, target, seed)
    ft = _features(pipe, [target], half)[0]
    fc = torch.cat([_features(pipe, cands[i : i + 512], half) for i in range(0, len(cands), 512)])
    scale = (ft ** 2).sum(-1)  # per position
    d_t = (((fc - ft) ** 2).sum(-1) / scale).sum(-1)
    if preserve:
        fp = _features(pipe, list(preserve), half)
        d_p = torch.stack([(((fc - p) ** 2).sum(-1) / (p ** 2).sum(-1)).sum(-1) for p in fp]).min(0).values
    else:
        d_p = torch.full_like(d_t, float("inf"))
    order = torch.argsort(d_t)
    out = []
    for i in order.tolist():
        if d_t[i] < d_p[i]:
            out.append({"text": cands[i], "distance": round(float(d_t[i]), 4),
                        "nearest_preserve_distance": round(float(d_p[i]), 4)})
        if len(out) >= k:
            break
    return out


def expansion_hook(k: int):
    """A spec hook for :func:`erasepro_core.robust.measure.run_t1`: each edit's target gets its ``k`` nearest
    expansion candidates as extra edits with the same anchor."""

    def hook(pipe, spec, erased: list[str]):
        edits = [e.model_dump() for e in spec.edits]
        extra = []
        for e in spec.edits:
            for c in expand(pipe, e.target, list(spec.preserve), k):
                extra.append({"target": c["text"], "anchor": e.anchor})
        data = spec.model_dump(mode="json")
        data["edits"] = edits + extra
        data["preserve"] = [p for p in spec.preserve if p not in {x["target"] for x in extra}]
        return type(spec).model_validate(data)

    return hook
