"""The plan: a spec resolved once against a model, so the stages follow it without asking which method runs.

Progressive layers per tower, the token policy, which preserve tokens count, the solver weights and the
method's K/V edit function all come from the method's config (:mod:`erasepro_core.methods`).
"""

from __future__ import annotations

from dataclasses import dataclass

from erasepro_core.adapters import Adapter, TextTower
from erasepro_core.methods import EditFunction, MethodConfig, method_for
from erasepro_core.methods.base import InputRules, PreservePositions, Schedule, TokenPolicy
from erasepro_core.spec import ErasureSpec


class ErasureError(ValueError):
    """The spec cannot be applied to this model (bad layer index, prompt too long, …)."""


@dataclass(frozen=True)
class Plan:
    spec: ErasureSpec
    method: MethodConfig
    kv_edit: EditFunction
    token_policy: TokenPolicy
    preserve_last_only: bool
    preserve_positions: PreservePositions
    inputs: InputRules  # templates/preserve rules of the method (e.g. UCE's protocol)
    schedule: Schedule
    layers: dict[int, list[int]]  # tower index -> sorted progressive-stage layers (empty: K/V only)
    solver_weights: tuple[float, float] | None  # (λ, α) of the zero-residual solves

    @property
    def n_progressive(self) -> int:
        return sum(len(v) for v in self.layers.values())

    def metric_weights(self) -> tuple[float, float]:
        """(λ, α) for the zero-residual metric; methods without one never build it, (1, 1e-2) is a fallback."""
        return self.solver_weights or (1.0, 1e-2)


def default_layers(n: int) -> list[int]:
    """Progressive-stage layers when the spec names none: all of a small encoder, else four spread ones."""
    if n <= 4:
        return list(range(n))
    return sorted({round(k * n / 4) for k in range(4)})


def schedule_fractions(schedule: str, k: int) -> list[float]:
    """β_j for k progressive layers; the final stage (β=1) is stage k+1.

    Each β_j is a fraction of the gap *remaining* at that layer. ``uniform`` gives every stage an equal
    share of the initial gap; ``front`` gives stage j a share ∝ (k+1−j), so shallow layers carry more.
    """
    m = k + 1
    shares = [1.0] * m if schedule == "uniform" else [float(m - j) for j in range(m)]
    out, rest = [], sum(shares)
    for s in shares[:k]:
        out.append(s / rest)
        rest -= s
    return out


def resolve_layers(schedule: Schedule, layers: list[int] | None, tower: TextTower) -> list[int]:
    """Sorted non-negative layer indices of ``tower`` for the progressive stage (none when ``schedule='none'`` or
    the tower is not edited progressively, like FLUX's pooled CLIP)."""
    if schedule == "none" or not tower.progressive:
        return []
    n = tower.n_context_layers
    if layers is None:
        return default_layers(n)
    out = []
    for i in layers:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise ErasureError(
                f"layers: {i} is out of range for {tower.component}, whose {n} layers feed the UNet "
                f"(valid: {-n}..{n - 1})"
            )
        out.append(j)
    return sorted(out)


def make_plan(spec: ErasureSpec, adapter: Adapter) -> Plan:
    config = spec.method
    schedule, layers = config.progressive_stage()
    return Plan(
        spec=spec, method=config, kv_edit=method_for(config).kv_edit, token_policy=config.pairing_policy(),
        preserve_last_only=config.preserves_last_token_only(), preserve_positions=config.preserve_positions(),
        inputs=config.input_rules(), schedule=schedule,
        layers={ti: resolve_layers(schedule, layers, tw) for ti, tw in enumerate(adapter.towers)},
        solver_weights=config.solver_weights(),
    )
