"""FLUX.1: T5 token features enter the transformer through ``context_embedder`` (into the joint attention), and
CLIP's pooled EOS state through ``time_text_embed.text_embedder.linear_1`` (into the modulation vector).

Two independent context spaces, each solved on its own: the T5 tokens (the primary space; the progressive
stage edits T5's feed-forward ``wo``) and the pooled CLIP state (one column per prompt, its EOS token).
"""

from __future__ import annotations

from torch import nn

from erasepro_core.adapters.base import Adapter, KVSite, TextTower, UnsupportedModelError, component
from erasepro_core.adapters.t5 import T5Tower, t5_is_editable

TOKEN_SITE = "context_embedder"
POOLED_SITE = "time_text_embed.text_embedder.linear_1"


MAX_T5_LENGTH = 512  # FluxPipeline refuses a longer max_sequence_length
SAMPLING = (28, 3.5)  # FluxPipeline's own defaults (FLUX.1 [dev]); [schnell] ignores guidance


def linear_site(root: nn.Module, prefix: str, name: str, width: int) -> KVSite:
    """The linear layer ``root.<name>`` as a site reading ``width`` features (on-disk key ``prefix.name.weight``)."""
    try:
        module = root.get_submodule(name)
    except AttributeError:
        module = None
    if not isinstance(module, nn.Linear):
        raise UnsupportedModelError(f"{prefix} has no linear layer {name}")
    if module.in_features != width:
        raise UnsupportedModelError(f"{prefix}.{name} reads {module.in_features} features but its text encoder "
                                    f"gives {width}")
    return KVSite(f"{prefix}.{name}.weight", module)


def flux_adapter(pipe: object) -> Adapter:
    transformer = component(pipe, "transformer")
    t5 = T5Tower("text_encoder_2", component(pipe, "text_encoder_2"), component(pipe, "tokenizer_2"),
                 penultimate=False)
    t5_is_editable(t5)
    length = int(t5.tokenizer.model_max_length)
    if length > MAX_T5_LENGTH:
        raise UnsupportedModelError(f"tokenizer_2's model_max_length is {length}; FluxPipeline encodes at most "
                                    f"{MAX_T5_LENGTH} T5 tokens (set it in tokenizer_2/tokenizer_config.json)")
    clip = TextTower("text_encoder", component(pipe, "text_encoder"), component(pipe, "tokenizer"),
                     penultimate=False, pooled=True, progressive=False)
    pooled = Adapter("flux", [clip], [linear_site(transformer, "transformer", POOLED_SITE, clip.width)])
    # The pipeline must pad T5 prompts to the length erase encoded them at (T5 sees the padding).
    return Adapter("flux", [t5], [linear_site(transformer, "transformer", TOKEN_SITE, t5.width)], also=[pooled],
                   sampling=SAMPLING, call_kwargs={"max_sequence_length": length})
