"""The preserve set and its cached statistics.

Preservation constrains ‖Δ C_p‖ where C_p holds token features of prompts that must not change. The
solver needs only the mean covariance C̄ = C_p C_pᵀ / N per site, so it is computed by one text-encoder
pass over the generic set, once per base model, and kept in a :class:`FeatureCache`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

from erasepro_core.adapters import Adapter
from erasepro_core.encode import prompt_features
from erasepro_core.prefix import PrefixStates
from erasepro_core.prompt_files import preserve_file_of, read_prompt_file
from erasepro_core.solver import Metric
from erasepro_core.stats import PreserveStats, SiteStats, stats_of
from erasepro_core.stats_store import Site, StatsStore, device_parts

PREFIX_STATES_KEPT = 8  # template-prefix blocks kept (per cache, all models together)


def generic_preserve_prompts(pipe: object | None = None) -> list[str]:
    """The base model's own ``erasepro_preserve.txt`` if its folder has one, else the shipped generic set."""
    return read_prompt_file(preserve_file_of(getattr(pipe, "name_or_path", None) or ""))


def model_key(adapter: Adapter) -> str:
    """A cheap identity of the text towers' weights (a strided sample of every parameter)."""
    h = hashlib.sha256()
    for tower in adapter.towers:
        if tower.reading:  # only then, so the keys of statistics already stored stay valid
            h.update(tower.reading.encode())
        for name, p in tower.model.named_parameters():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 512)
            h.update(name.encode())
            h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()


class FeatureCache:
    """Per base model: generic preserve statistics, Cholesky factors of M and the templates' prefix states,
    bounded LRU."""

    def __init__(self, max_models: int = 4, store: StatsStore | None | str = "default") -> None:
        """``store``: where statistics persist across processes (``"default"``: :meth:`StatsStore.default`;
        None: memory only)."""
        self.max_models = max_models
        self.store = StatsStore.default() if store == "default" else store
        self._stats: OrderedDict[str, PreserveStats] = OrderedDict()
        self._metrics: OrderedDict[tuple, Metric] = OrderedDict()
        self._prefixes: OrderedDict[tuple, PrefixStates] = OrderedDict()
        self.computed: list[Site] = []  # sites this cache computed (not loaded) on its last fill: for the logs

    def generic_stats(
        self, adapter: Adapter, mkey: str, prompts: list[str], layers: dict[int, list[int]], last_only: bool = False,
        sequence: bool = False,
    ) -> PreserveStats:
        """Statistics of ``prompts`` on the model whose :func:`model_key` is ``mkey``: from memory, else from the
        store, else computed (and stored). ``last_only``/``sequence``: which positions (see ``prompt_features``)."""
        parts = {"model": mkey, **device_parts(adapter.towers[0].model), "last_only": str(last_only),
                 "prompts": hashlib.sha256("\n".join(prompts).encode()).hexdigest()}
        if sequence:  # only then, so the keys of statistics already stored stay valid
            parts["sequence"] = "True"
        key = StatsStore.key(parts)
        stats = self._stats.get(key) or PreserveStats()
        self.computed = []  # this call's, even when memory has everything
        if _missing(stats, layers):
            self._fill(adapter, key, parts, prompts, layers, (last_only, sequence), stats)
        self._stats[key] = stats
        self._stats.move_to_end(key)
        while len(self._stats) > self.max_models:
            self._stats.popitem(last=False)
        return stats

    def _fill(self, adapter: Adapter, key: str, parts: dict[str, str], prompts: list[str],
              layers: dict[int, list[int]], positions: tuple[bool, bool], stats: PreserveStats) -> None:
        self.computed = []
        if self.store is None:
            self.computed = list(_compute(adapter, prompts, _missing(stats, layers), positions, stats))
            return
        _put(stats, self.store.load(key, _missing(stats, layers)))
        if not _missing(stats, layers):
            return
        with self.store.locked(key):
            _put(stats, self.store.load(key, _missing(stats, layers)))  # another worker may have just written them
            todo = _missing(stats, layers)
            if todo:
                new = _compute(adapter, prompts, todo, positions, stats)
                self.store.save(key, parts, new)
                self.computed = list(new)

    def prefix_states(self, key: tuple, build: Callable[[], PrefixStates]) -> PrefixStates:
        """A prefix block's encoder states under ``key`` (the model's identity + the block's exact input), built on
        a miss; at most :data:`PREFIX_STATES_KEPT` blocks are kept (the default templates' block: ~3 MB for CLIP-L,
        ~14 MB for SDXL's bigG tower)."""
        if key not in self._prefixes:
            self._prefixes[key] = build()
            while len(self._prefixes) > PREFIX_STATES_KEPT:
                self._prefixes.popitem(last=False)
        self._prefixes.move_to_end(key)
        return self._prefixes[key]

    def metric(self, key: tuple, build: Callable[[], Metric]) -> Metric:
        if key not in self._metrics:
            self._metrics[key] = build()
            while len(self._metrics) > 16 * self.max_models:
                self._metrics.popitem(last=False)
        self._metrics.move_to_end(key)
        return self._metrics[key]


def _missing(stats: PreserveStats, layers: dict[int, list[int]]) -> list[Site]:
    sites: list[Site] = [] if stats.ctx is not None else [("ctx",)]
    return sites + [("fc2", t, i) for t, ls in layers.items() for i in ls if (t, i) not in stats.fc2]


def _put(stats: PreserveStats, found: dict[Site, SiteStats]) -> None:
    for site, s in found.items():
        if site == ("ctx",):
            stats.ctx = s
        else:
            stats.fc2[(site[1], site[2])] = s


def _compute(adapter: Adapter, prompts: list[str], sites: list[Site], positions: tuple[bool, bool],
             stats: PreserveStats) -> dict[Site, SiteStats]:
    """One text-encoder pass over ``prompts`` for the missing sites (the context is always computed with it)."""
    layers: dict[int, list[int]] = {}
    for site in sites:
        if site[0] == "fc2":
            layers.setdefault(site[1], []).append(site[2])
    fc2, ctx = prompt_features(adapter, prompts, layers, last_only=positions[0], sequence=positions[1])
    new: dict[Site, SiteStats] = {("fc2", *k): stats_of(v) for k, v in fc2.items()}
    if ("ctx",) in sites:
        new[("ctx",)] = stats_of(ctx)
    _put(stats, new)
    return new


_DEFAULT_CACHE = FeatureCache()


def default_cache() -> FeatureCache:
    """The process-wide cache ``erase`` uses when none is passed (a worker keeps it across jobs)."""
    return _DEFAULT_CACHE

