"""SD-3 / SD-3.5 (``StableDiffusion3Pipeline``, MMDiT): CLIP-L, CLIP-G and T5 enter the transformer through two
linear maps, as for FLUX, and those are the final stage's sites.

* ``transformer.context_embedder`` (T5 width → the joint stream) reads one sequence: 77 CLIP tokens (CLIP-L and
  CLIP-G penultimate states concatenated along features, zero-padded to T5's width) followed by T5's
  final-normed tokens. It is the K/V analogue: every joint block's ``add_k_proj``/``add_v_proj`` reads its output
  only after a timestep-modulated norm (and, past the first block, after joint attention with the image), so an
  exact edit here is the one linear edit that maps target tokens onto anchor tokens for every block and step.
  One context space in two *segments* (:attr:`Adapter.segments`): one solve over both segments' columns.
* ``transformer.time_text_embed.text_embedder.linear_1`` reads the pooled vector: each CLIP tower's projected EOS
  state (``text_projection`` of the final-normed EOS), concatenated. A second, independent context space.

The progressive stage edits T5's ``DenseReluDense.wo`` only: the CLIP towers' layers also feed the pooled vector,
which is solved from the unedited towers, so editing them would move what the pooled edit was solved on.
Without ``text_encoder_3`` (SD-3 run without T5, whose tokens are then zeros) the token space is CLIP alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from erasepro_core.adapters.base import Adapter, TextTower, UnsupportedModelError, clip_towers_are_editable, component
from erasepro_core.adapters.flux import POOLED_SITE, TOKEN_SITE, linear_site
from erasepro_core.adapters.t5 import T5Tower, t5_is_editable

MAX_T5_LENGTH = 512  # StableDiffusion3Pipeline refuses a longer max_sequence_length
SAMPLING = (28, 7.0)  # StableDiffusion3Pipeline's own defaults


@dataclass
class ProjectedTower(TextTower):
    """A ``CLIPTextModelWithProjection`` read at its pooled output: ``text_projection`` of the final-normed state."""

    reading = "projected"

    @property
    def width(self) -> int:
        return int(self.model.config.projection_dim)

    def to_context(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.text_projection(self._inner.final_layer_norm(h))


def sd3_adapter(pipe: object) -> Adapter:
    transformer = component(pipe, "transformer")
    encoders = [component(pipe, "text_encoder"), component(pipe, "text_encoder_2")]
    tokenizers = [component(pipe, "tokenizer"), component(pipe, "tokenizer_2")]
    names = ("text_encoder", "text_encoder_2")
    clip = [TextTower(n, e, t, penultimate=True, progressive=False)
            for n, e, t in zip(names, encoders, tokenizers, strict=True)]
    pooled = [ProjectedTower(n, e, t, penultimate=False, pooled=True, progressive=False)
              for n, e, t in zip(names, encoders, tokenizers, strict=True)]
    clip_towers_are_editable(clip)
    if any(not isinstance(getattr(e, "text_projection", None), nn.Linear) for e in encoders):
        raise UnsupportedModelError("SD-3's CLIP encoders must be CLIPTextModelWithProjection (pooled projection)")
    lengths = {int(t.model_max_length) for t in tokenizers}
    if len(lengths) != 1:
        raise UnsupportedModelError(f"tokenizer and tokenizer_2 pad to different lengths {sorted(lengths)}; "
                                    "StableDiffusion3Pipeline pads both to the first's")
    embedder = getattr(transformer, TOKEN_SITE, None)
    width = embedder.in_features if isinstance(embedder, nn.Linear) else 0  # 0: linear_site says it is missing
    site = linear_site(transformer, "transformer", TOKEN_SITE, width)
    clip_width = sum(t.width for t in clip)
    if clip_width > width:
        raise UnsupportedModelError(f"the CLIP towers give {clip_width} features but context_embedder reads {width}")
    segments = [Adapter("sd3", clip, [site])]
    call_kwargs: dict[str, int] = {}
    if getattr(pipe, "text_encoder_3", None) is not None:
        t5 = T5Tower("text_encoder_3", pipe.text_encoder_3, component(pipe, "tokenizer_3"), penultimate=False)
        t5_is_editable(t5)
        length = int(t5.tokenizer.model_max_length)
        if length > MAX_T5_LENGTH:
            raise UnsupportedModelError(f"tokenizer_3's model_max_length is {length}; StableDiffusion3Pipeline "
                                        f"encodes at most {MAX_T5_LENGTH} T5 tokens (set it in "
                                        "tokenizer_3/tokenizer_config.json)")
        if t5.width != width:
            raise UnsupportedModelError(f"text_encoder_3 gives {t5.width} features but context_embedder reads "
                                        f"{width}")
        segments.append(Adapter("sd3", [t5], [site]))
        call_kwargs["max_sequence_length"] = length  # T5 sees its padding: generate pads as erase encoded
    pooled_site = linear_site(transformer, "transformer", POOLED_SITE, sum(t.width for t in pooled))
    pooled_space = Adapter("sd3", pooled, [pooled_site])
    return Adapter("sd3", [t for s in segments for t in s.towers], [site], also=[pooled_space], sampling=SAMPLING,
                   call_kwargs=call_kwargs, segments=segments)
