"""Preserve statistics of one site: Σ c cᵀ over the preserve columns c, their count, and a drift sample."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

N_DRIFT_SAMPLES = 128  # token features kept per site to report drift cheaply


@dataclass
class SiteStats:
    """Σ c cᵀ, the column count and a fixed sample of columns for one site's input features."""

    gram: torch.Tensor  # float64
    n: int
    sample: torch.Tensor  # d × ≤N_DRIFT_SAMPLES, float32

    @classmethod
    def empty(cls, d: int, device: torch.device | str | None = None) -> SiteStats:
        return cls(torch.zeros(d, d, dtype=torch.float64, device=device), 0, torch.zeros(d, 0, device=device))

    def to(self, device: torch.device | str) -> SiteStats:
        """The same statistics on ``device`` (itself when already there)."""
        return SiteStats(self.gram.to(device), self.n, self.sample.to(device))

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
    return SiteStats(cols64 @ cols64.T, n, cols[:, idx.to(cols.device)].float() if n else cols.float())


@dataclass
class PreserveStats:
    fc2: dict[tuple[int, int], SiteStats] = field(default_factory=dict)
    ctx: SiteStats | None = None
    n_prompts: int = 0  # preserve prompts behind the statistics

    def to(self, device: torch.device | str) -> PreserveStats:
        return PreserveStats({k: v.to(device) for k, v in self.fc2.items()},
                             self.ctx.to(device) if self.ctx is not None else None, self.n_prompts)
