"""A T5 encoder as a text tower (FLUX's ``text_encoder_2``): run block by block like the CLIP towers.

T5 is bidirectional and the pipelines run it on prompts padded to a fixed length *without* an attention mask, so
every token's state depends on the padding after it: prompts are always encoded at the tokenizer's full length,
exactly as the pipeline does. The progressive stage's layer is each block's feed-forward output projection
``layer.1.DenseReluDense.wo`` (the analogue of CLIP's ``mlp.fc2``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from erasepro_core.adapters.base import TextTower, UnsupportedModelError


@dataclass
class T5Tower(TextTower):
    """``model`` is a ``T5EncoderModel``; ``penultimate`` is unused (the context is the final-normed state)."""

    causal = False

    @property
    def _inner(self) -> nn.Module:
        return self.model.encoder

    @property
    def layers(self) -> nn.ModuleList:
        return self._inner.block

    @property
    def n_context_layers(self) -> int:
        return len(self.layers)

    @property
    def width(self) -> int:
        return int(self.model.config.d_model)

    def fc2(self, i: int) -> nn.Linear:
        return self.layers[i].layer[1].DenseReluDense.wo

    def fc2_name(self, i: int) -> str:
        return f"{self.component}.encoder.block.{i}.layer.1.DenseReluDense.wo.weight"

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self._inner.embed_tokens(ids)

    def _bias(self, n: int, device: torch.device) -> torch.Tensor:
        """The relative position bias block 0 computes and every block shares (no mask: none is passed)."""
        return self.layers[0].layer[0].SelfAttention.compute_bias(n, n, device=device)

    def _run(self, i: int, h: torch.Tensor) -> torch.Tensor:
        out = self.layers[i](h, None, self._bias(h.shape[1], h.device))
        return out[0] if isinstance(out, tuple) else out

    def to_context(self, h: torch.Tensor) -> torch.Tensor:
        return self._inner.final_layer_norm(h)


def t5_is_editable(tower: T5Tower) -> None:
    inner = getattr(tower.model, "encoder", None)
    if inner is None or not hasattr(inner, "block") or not hasattr(tower.layers[0].layer[1], "DenseReluDense"):
        raise UnsupportedModelError(f"{tower.component} is not a T5 encoder")
