"""Prompts encoded as shared prefixes plus per-prompt suffixes, each token computed once.

CLIP's text encoder is causal: a token's states depend only on the tokens before it. Every prompt made from
one template starts with the same tokens (BOS and the template's text before ``{}``), so those are encoded once
per template (all templates in one batch) and the concept tokens attend to their cached keys/values; nothing
after the last position a job reads is encoded at all (under the ``last`` policy, not even EOS). Suffixes are
batched by length across templates (short groups padded at their end into longer ones while that is cheaper
than another call), so a layer is a handful of calls. Columns are gathered by (row, position) from one flat
(tokens × d) matrix. On an unedited tower (:meth:`PrefixBatch.encode`) the prefix block's states can come from
a cache: the templates, hence their prefixes, are the same in most jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from erasepro_core.adapters import TextTower

# A layer call costs about as much as this many more tokens (CLIP ViT-L/14 on CPU, measured: ~2 ms per call,
# ~0.13 ms per token), so shorter suffixes are padded into a longer group while that adds at most these many.
MERGE_PAD_TOKENS = 16
MAX_GROUP_ROWS = 128  # suffix rows per layer call at most


@dataclass
class PrefixStates:
    """A prefix block run through a tower's context layers, unedited: its keys/values at every layer and its
    final states — all that the suffixes (and columns read at prefix positions) need from it."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    out: torch.Tensor


# (key, build) -> the prefix states for that key: ``build()`` on a miss. The key is the exact input (prefix
# token ids as padded, layer count); the caller adds the model's identity. A hit is therefore what encoding the
# block again would give, bit for bit (same input, same shapes): deltas stay the same whatever ran before.
PrefixCache = Callable[[tuple, Callable[[], PrefixStates]], PrefixStates]


class PrefixBatch:
    """``rows`` (token ids) cut to ``needed[r]`` positions (padded if longer), split after ``shared[r]`` tokens."""

    def __init__(self, tower: TextTower, rows: list[list[int]], shared: list[int], needed: list[int]) -> None:
        pad = tower.tokenizer.pad_token_id
        pad = int(tower.tokenizer.eos_token_id if pad is None else pad)
        device = tower.device
        prefixes: dict[tuple[int, ...], int] = {}
        by_len: dict[int, list[int]] = {}
        cut: list[list[int]] = []
        self._split: list[tuple[int, int]] = []  # per row: (prefix index, prefix length)
        for r, ids in enumerate(rows):
            n = needed[r]
            full = (ids + [pad] * max(n - len(ids), 0))[:n]
            p = max(1, min(shared[r], n))
            k = prefixes.setdefault(tuple(full[:p]), len(prefixes))
            cut.append(full)
            self._split.append((k, p))
            if n > p:
                by_len.setdefault(n - p, []).append(r)
        # All prefixes in one block, padded at the end (causal: padding never changes the real tokens' states).
        width = max(len(key) for key in prefixes)
        self.prefix_ids = torch.tensor([list(key) + [pad] * (width - len(key)) for key in prefixes], device=device)
        self.prefix_len = torch.tensor([len(key) for key in prefixes], device=device)
        self.suffixes: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (ids, prefix index, offsets)
        self._where: dict[int, tuple[int, int]] = {}
        for length, members in self._groups(by_len, int(tower.tokenizer.model_max_length)):
            for j, r in enumerate(members):
                self._where[r] = (len(self.suffixes), j)
            ks = [self._split[r][0] for r in members]
            ps = [self._split[r][1] for r in members]
            ids = [(cut[r][p:] + [pad] * length)[:length] for r, p in zip(members, ps, strict=True)]
            self.suffixes.append((torch.tensor(ids, device=device), torch.tensor(ks, device=device),
                                  torch.tensor(ps, device=device)))
        self._offsets, total = [], self.prefix_ids.numel()
        for ids, _, _ in self.suffixes:
            self._offsets.append(total)
            total += ids.numel()
        self.n_tokens = total

    def _groups(self, by_len: dict[int, list[int]], n_max: int) -> list[tuple[int, list[int]]]:
        """Suffix groups (length, rows), shortest first; a group is padded at the end into the next longer one
        while that adds at most :data:`MERGE_PAD_TOKENS` tokens and stays inside the position table (causal: a
        padded tail never changes the real tokens' states)."""
        out: list[tuple[int, list[int]]] = []
        for length, members in sorted(by_len.items()):
            if out:
                short, rows = out[-1]
                if (len(rows) * (length - short) <= MERGE_PAD_TOKENS
                        and all(self._split[r][1] + length <= n_max for r in rows)):
                    out[-1] = (length, rows + members)
                    continue
            out.append((length, list(members)))
        # Bounded calls: a group's transients (its rows' copy of the prefix keys/values, the MLP's input) grow with
        # its rows, while past ~100 tokens a call's own overhead is negligible.
        n = MAX_GROUP_ROWS
        return [(length, rows[s : s + n]) for length, rows in out for s in range(0, len(rows), n)]

    def index(self, rows: list[int], pos: list[int]) -> torch.Tensor:
        flat = []
        width = self.prefix_ids.shape[1]
        for r, q in zip(rows, pos, strict=True):
            k, p = self._split[r]
            if q < p:
                flat.append(k * width + q)
            else:
                g, j = self._where[r]
                flat.append(self._offsets[g] + j * self.suffixes[g][0].shape[1] + q - p)
        return torch.tensor(flat, dtype=torch.long)

    def embed(self, tower: TextTower) -> list[torch.Tensor]:
        return [tower.embed_at(self.prefix_ids)] + [tower.embed_at(ids, off) for ids, _, off in self.suffixes]

    def layer(self, tower: TextTower, i: int, states: list[torch.Tensor]) -> tuple[list[torch.Tensor],
                                                                                     list[torch.Tensor]]:
        """Layer ``i``: the prefixes, then each suffix group attending to its rows' cached prefixes."""
        blocks = list(self.layer_iter(tower, i, states))
        return [o for o, _, _ in blocks], [x for _, x, _ in blocks]

    def layer_iter(self, tower: TextTower, i: int, states: list[torch.Tensor]
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """:meth:`layer` one block at a time: (output, fc2 input, resume), ``resume`` being what
        :meth:`resume_iter` needs to give that block's output and fc2 input again (its post-attention state: the
        MLP alone is rerun). ``states[b]`` is read when block b is computed: the caller may replace earlier
        blocks' entries meanwhile (the prefix keys/values are taken from block 0 first)."""
        h_mid, (k, v) = tower.attend_cached(i, states[0])
        yield (*tower.mlp_cached(i, h_mid), h_mid)
        for b, (_, which, off) in enumerate(self.suffixes, 1):
            mid = tower.attend_cached(i, states[b], (k[which], v[which], off))[0]
            yield (*tower.mlp_cached(i, mid), mid)

    @staticmethod
    def resume_iter(tower: TextTower, i: int, resumes: list[torch.Tensor]
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each block's (output, fc2 input) of layer ``i`` again, from :meth:`layer_iter`'s ``resume``."""
        for h_mid in resumes:
            yield tower.mlp_cached(i, h_mid)

    @staticmethod
    def flat(states: list[torch.Tensor]) -> torch.Tensor:
        """All blocks' states as one (tokens × d) matrix, to gather columns from with :meth:`index`."""
        return torch.cat([s.reshape(-1, s.shape[-1]) for s in states])

    def _encode_prefixes(self, tower: TextTower, n_layers: int) -> PrefixStates:
        h = tower.embed_at(self.prefix_ids)
        kv = []
        for i in range(n_layers):
            h, _, own = tower.layer_cached(i, h)
            kv.append(own)
        return PrefixStates(kv, h)

    def encode(self, tower: TextTower, cache: PrefixCache | None = None) -> list[torch.Tensor]:
        """Every block's states after the tower's context layers, the tower unedited (the same computation as
        :meth:`embed` then :meth:`layer` per layer). The prefix block comes from ``cache`` when it has it: the
        templates' prefixes are the same in most jobs."""
        return list(self.encode_iter(tower, cache))

    def encode_iter(self, tower: TextTower, cache: PrefixCache | None = None) -> Iterator[torch.Tensor]:
        """:meth:`encode`'s blocks one at a time, in flat order (a caller that keeps only some columns never holds
        every token's states)."""
        n = tower.n_context_layers
        key = (tuple(tuple(r) for r in self.prefix_ids.tolist()), n)
        pre = cache(key, lambda: self._encode_prefixes(tower, n)) if cache is not None else \
            self._encode_prefixes(tower, n)
        yield pre.out
        for ids, which, off in self.suffixes:
            h = tower.embed_at(ids, off)
            for i, (k, v) in enumerate(pre.kv):
                h, _, _ = tower.layer_cached(i, h, (k[which], v[which], off))
            yield h


def needed_lengths(n_rows: int, refs: list[tuple[int, int]], default: list[int]) -> list[int]:
    """Per row, 1 + the last position any pair reads (rows no pair reads keep ``default``)."""
    out = [0] * n_rows
    for r, q in refs:
        out[r] = max(out[r], q + 1)
    return [o or d for o, d in zip(out, default, strict=True)]


class PaddedBatch:
    """Whole prompts padded to the tokenizer's length, one block: for a bidirectional tower (T5), whose every
    state depends on every token, padding included — exactly the pipeline's input. Same interface as
    :class:`PrefixBatch`."""

    rows_per_block = 64  # bounds the per-call activations (T5-XXL's feed-forward input: 64 × 512 × 10240)

    def __init__(self, tower: TextTower, rows: list[list[int]]) -> None:
        self.length = int(tower.tokenizer.model_max_length)
        n = self.rows_per_block
        self.blocks = [tower.pad(rows[s : s + n], self.length) for s in range(0, len(rows), n)]

    def index(self, rows: list[int], pos: list[int]) -> torch.Tensor:
        """Row r's position q in the flat states (every block has the same length, so blocks just follow)."""
        return torch.tensor([r * self.length + q for r, q in zip(rows, pos, strict=True)], dtype=torch.long)

    def embed(self, tower: TextTower) -> list[torch.Tensor]:
        return [tower.embed(ids) for ids in self.blocks]

    def layer(self, tower: TextTower, i: int, states: list[torch.Tensor]) -> tuple[list[torch.Tensor],
                                                                                     list[torch.Tensor]]:
        outs = [tower.layer(i, h) for h in states]
        return [o for o, _ in outs], [x for _, x in outs]

    @staticmethod
    def layer_iter(tower: TextTower, i: int, states: list[torch.Tensor]
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """:meth:`layer` one block at a time: (output, fc2 input, resume); ``resume`` is the block's input (a T5
        layer is rerun whole by :meth:`resume_iter`)."""
        for b in range(len(states)):
            h = states[b]
            yield (*tower.layer(i, h), h)

    @staticmethod
    def resume_iter(tower: TextTower, i: int, resumes: list[torch.Tensor]
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each block's (output, fc2 input) of layer ``i`` again, from :meth:`layer_iter`'s ``resume``."""
        for h in resumes:
            yield tower.layer(i, h)

    def encode(self, tower: TextTower, cache: PrefixCache | None = None) -> list[torch.Tensor]:
        """Every block's states after the tower's context layers (no prefixes to share: ``cache`` is unused)."""
        states = self.embed(tower)
        for i in range(tower.n_context_layers):
            states = self.layer(tower, i, states)[0]
        return states

    def encode_iter(self, tower: TextTower, cache: PrefixCache | None = None) -> Iterator[torch.Tensor]:
        """:meth:`encode`'s blocks one at a time (rows never attend across blocks: the same states)."""
        for ids in self.blocks:
            h = tower.embed(ids)
            for i in range(tower.n_context_layers):
                h = tower.layer(i, h)[0]
            yield h

    flat = staticmethod(PrefixBatch.flat)


class BlockGather:
    """Rows at flat ``index`` (see :meth:`PrefixBatch.index`) of states that arrive one block at a time: sorted
    once, so each block's share is a slice (O(n log n) once, not O(n) per block)."""

    def __init__(self, index: torch.Tensor) -> None:
        self.index = index.to(torch.long)
        self.order = torch.argsort(self.index, stable=True)
        self.sorted = self.index[self.order]

    def __len__(self) -> int:
        return self.index.numel()

    def into(self, out: torch.Tensor, flat: torch.Tensor, start: int) -> None:
        """Copy the rows of ``flat`` (one block's tokens × d, the block's first token at flat ``start``) that
        the index asks for into their rows of ``out`` (n × d)."""
        lo = int(torch.searchsorted(self.sorted, start))
        hi = int(torch.searchsorted(self.sorted, start + flat.shape[0]))
        if hi > lo:
            dev = flat.device
            out[self.order[lo:hi].to(out.device)] = flat[(self.sorted[lo:hi] - start).to(dev)].to(out.device)


def gather_context(tower: TextTower, blocks: Iterable[torch.Tensor], indices: list[torch.Tensor]
                   ) -> list[torch.Tensor]:
    """Context columns (d × n each) at flat ``indices`` (see :meth:`PrefixBatch.index`) of ``blocks``' states,
    taken block by block: only the gathered columns and one block are ever held (``to_context`` per block, as
    the flattened whole would give)."""
    gathers = [BlockGather(idx) for idx in indices]
    outs: list[torch.Tensor | None] = [None] * len(indices)
    start = 0
    for h in blocks:
        ctx = tower.to_context(h)  # its width may differ from the states' (SD-3's projected pooled CLIP)
        flat = ctx.reshape(-1, ctx.shape[-1])
        for k, g in enumerate(gathers):
            if outs[k] is None:
                outs[k] = flat.new_empty(len(g), flat.shape[1])
            g.into(outs[k], flat, start)
        start += flat.shape[0]
    return [o.T for o in outs]  # type: ignore[union-attr]


def batch_for(tower: TextTower, rows: list[list[int]], shared: list[int], refs: list[tuple[int, int]]
              ) -> PrefixBatch | PaddedBatch:
    """Shared prefixes and no tail for a causal tower (CLIP); whole padded prompts for a bidirectional one."""
    if not tower.causal:
        return PaddedBatch(tower, rows)
    return PrefixBatch(tower, rows, shared, needed_lengths(len(rows), refs, [len(r) for r in rows]))
