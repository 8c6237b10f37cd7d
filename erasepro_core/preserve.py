"""The preserve set and its cached statistics.

Preservation constrains ‖Δ C_p‖ where C_p holds token features of prompts that must not change. The
solver needs only the mean covariance C̄ = C_p C_pᵀ / N per site, so it is computed by one text-encoder
pass over the generic set, once per base model, and kept in a :class:`FeatureCache`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from erasepro_core.adapters import Adapter, TextTower
from erasepro_core.solver import Metric

PRESERVE_FILE = "erasepro_preserve.txt"  # a base-model folder may ship its own preserve set
N_DRIFT_SAMPLES = 128  # token features kept per site to report drift cheaply
# Padding positions after EOS feed cross-attention too, so preserve a few of them per prompt; further pads
# repeat the same token and differ only in position, so more add cost but little information.
N_PRESERVE_PADS = 8


def read_prompt_file(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def generic_preserve_prompts(pipe: object | None = None) -> list[str]:
    """The base model's own ``erasepro_preserve.txt`` if its folder has one, else the shipped generic set."""
    name = getattr(pipe, "name_or_path", None) or ""
    if name and (Path(name) / PRESERVE_FILE).is_file():
        return read_prompt_file(Path(name) / PRESERVE_FILE)
    return read_prompt_file(Path(str(resources.files("erasepro_core") / "data" / "preserve_prompts.txt")))


@dataclass
class SiteStats:
    """Σ c cᵀ, the column count and a fixed sample of columns for one site's input features."""

    gram: torch.Tensor  # float64
    n: int
    sample: torch.Tensor  # d × ≤N_DRIFT_SAMPLES, float32

    def mean_cov(self) -> torch.Tensor | None:
        return self.gram / self.n if self.n else None

    def combined(self, extra: SiteStats | None, removed: SiteStats | None,
                 removed_cols: torch.Tensor | None = None) -> SiteStats:
        """Add ``extra``'s statistics and subtract ``removed``'s; ``removed_cols`` (its columns) also leave the
        drift sample, recognised by value (the same prompt gives the same features up to float noise)."""
        if (extra is None or not extra.n) and (removed is None or not removed.n):
            return self  # the common case: the cached generic statistics, shared, never modified
        gram, n, sample = self.gram.clone(), self.n, self.sample
        if removed is not None and removed.n:
            gram -= removed.gram
            n -= removed.n
            if removed_cols is not None and sample.numel() and removed_cols.numel():
                dist = torch.cdist(sample.T.float(), removed_cols.T.float().to(sample.device))
                scale = sample.norm(dim=0).clamp_min(1e-12)
                sample = sample[:, dist.min(dim=1).values > 1e-3 * scale]
        if extra is not None and extra.n:
            gram += extra.gram
            n += extra.n
            sample = torch.cat([sample, extra.sample], 1)[:, : 2 * N_DRIFT_SAMPLES]
        return SiteStats(gram, n, sample)


def stats_of(cols: torch.Tensor) -> SiteStats:
    """Statistics of columns ``cols`` (d × n)."""
    cols64 = cols.to(torch.float64)
    n = cols.shape[1]
    idx = torch.linspace(0, max(n - 1, 0), min(n, N_DRIFT_SAMPLES)).round().long()
    return SiteStats(cols64 @ cols64.T, n, cols[:, idx].float().cpu() if n else cols.float().cpu())


def _prompt_ids(tower: TextTower, prompts: list[str]) -> list[list[int]]:
    tok = tower.tokenizer
    n_max = int(tok.model_max_length)
    out = []
    for p in prompts:
        ids = [tok.bos_token_id, *tok(p, add_special_tokens=False)["input_ids"], tok.eos_token_id]
        out.append(ids[: n_max - 1] + [tok.eos_token_id] if len(ids) > n_max else ids)
    return out


@torch.no_grad()
def prompt_features(
    adapter: Adapter, prompts: list[str], layers: dict[int, list[int]], last_only: bool = False,
    batch: int = 256,
) -> tuple[dict[tuple[int, int], torch.Tensor], torch.Tensor]:
    """Token features (positions 1..EOS plus a few pads, or the last token before EOS) of ``prompts``, model as is.

    Returns fc2-input columns per ``(tower, layer)`` for the requested layers and context columns.
    """
    fc2: dict[tuple[int, int], list[torch.Tensor]] = {}
    ctx_parts: list[list[torch.Tensor]] = []
    for ti, tower in enumerate(adapter.towers):
        rows = sorted(_prompt_ids(tower, prompts), key=len)  # similar lengths share a batch: less padding
        parts: list[torch.Tensor] = []
        for s in range(0, len(rows), batch):
            chunk = rows[s : s + batch]
            n_max = int(tower.tokenizer.model_max_length)
            length = min(n_max, max(len(r) for r in chunk) + (0 if last_only else N_PRESERVE_PADS))
            if last_only:
                sel = [(r, len(ids) - 2) for r, ids in enumerate(chunk)]
            else:
                sel = [(r, p) for r, ids in enumerate(chunk) for p in range(1, min(len(ids) + N_PRESERVE_PADS, length))]
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


def model_key(adapter: Adapter) -> str:
    """A cheap identity of the text towers' weights (a strided sample of every parameter)."""
    h = hashlib.sha256()
    for tower in adapter.towers:
        for name, p in tower.model.named_parameters():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 512)
            h.update(name.encode())
            h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()


@dataclass
class PreserveStats:
    fc2: dict[tuple[int, int], SiteStats] = field(default_factory=dict)
    ctx: SiteStats | None = None


class FeatureCache:
    """Per base model: generic preserve statistics and Cholesky factors of M, bounded LRU."""

    def __init__(self, max_models: int = 4) -> None:
        self.max_models = max_models
        self._stats: OrderedDict[str, PreserveStats] = OrderedDict()
        self._metrics: OrderedDict[tuple, Metric] = OrderedDict()

    def generic_stats(
        self, adapter: Adapter, mkey: str, prompts: list[str], layers: dict[int, list[int]], last_only: bool = False
    ) -> PreserveStats:
        """Statistics of ``prompts`` on the model whose :func:`model_key` is ``mkey`` (computed or cached)."""
        key = mkey + hashlib.sha256("\n".join(prompts).encode()).hexdigest() + str(last_only)
        stats = self._stats.get(key) or PreserveStats()
        missing = {t: [i for i in ls if (t, i) not in stats.fc2] for t, ls in layers.items()}
        missing = {t: ls for t, ls in missing.items() if ls}
        if stats.ctx is None or missing:
            fc2, ctx = prompt_features(adapter, prompts, missing, last_only=last_only)
            stats.fc2.update({k: stats_of(v) for k, v in fc2.items()})
            stats.ctx = stats.ctx or stats_of(ctx)
        self._stats[key] = stats
        self._stats.move_to_end(key)
        while len(self._stats) > self.max_models:
            self._stats.popitem(last=False)
        return stats

    def metric(self, key: tuple, build: callable) -> Metric:
        if key not in self._metrics:
            self._metrics[key] = build()
            while len(self._metrics) > 16 * self.max_models:
                self._metrics.popitem(last=False)
        self._metrics.move_to_end(key)
        return self._metrics[key]


_DEFAULT_CACHE = FeatureCache()


def default_cache() -> FeatureCache:
    """The process-wide cache ``erase`` uses when none is passed (a worker keeps it across jobs)."""
    return _DEFAULT_CACHE

