"""The preserve set and its cached statistics.

Preservation constrains ‖Δ C_p‖ where C_p holds token features of prompts that must not change. The
solver needs only the mean covariance C̄ = C_p C_pᵀ / N per site, so it is computed by one text-encoder
pass over the generic set, once per base model, and kept in a :class:`FeatureCache`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from erasepro_core.adapters import Adapter
from erasepro_core.encode import prompt_features
from erasepro_core.solver import Metric

PRESERVE_FILE = "erasepro_preserve.txt"  # a base-model folder may ship its own preserve set
N_DRIFT_SAMPLES = 128  # token features kept per site to report drift cheaply


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

    @classmethod
    def empty(cls, d: int) -> SiteStats:
        return cls(torch.zeros(d, d, dtype=torch.float64), 0, torch.zeros(d, 0))

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

    def metric(self, key: tuple, build: Callable[[], Metric]) -> Metric:
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

