"""A toy attack for tests/test_attack_registry.py: one function, registered there by one line.

It draws no images: its "ASR" is ``budget / 10`` (capped at 1), and it reports whether ``edited`` differs from
``unedited`` in any UNet weight (the evaluation applied the delta to a copy, not to the base).
"""

from __future__ import annotations

import numpy as np

from erasepro_core.attacks.result import AttackResult, JudgeFn


def toy_attack(edited, unedited, target: str, judge: JudgeFn, budget: int, seed: int = 0, **_: object) -> AttackResult:
    import torch

    changed = any(not torch.equal(a, b) for a, b in zip(edited.unet.parameters(), unedited.unet.parameters(),
                                                          strict=True))
    asr = min(1.0, budget / 10)
    return AttackResult("toy", target, budget, asr, [(budget, asr)], [], np.zeros((0, 1, 1, 3), np.uint8),
                        np.zeros(0), budget, 0.0, {"changed": changed})
