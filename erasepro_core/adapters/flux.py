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


def linear_site(root: nn.Module, prefix: str, name: str, width: int) -> KVSite:
    """The linear layer ``root.<name>`` as a site reading ``width`` features (on-disk key ``prefix.name.weight``)."""
    module = root.get_submodule(name) if _has(root, name) else None
    if not isinstance(module, nn.Linear):
        raise UnsupportedModelError(f"{prefix} has no linear layer {name}")
    if module.in_features != width:
        raise UnsupportedModelError(f"{prefix}.{name} reads {module.in_features} features but its text encoder "
                                    f"gives {width}")
    return KVSite(f"{prefix}.{name}.weight", module)


def _has(root: nn.Module, name: str) -> bool:
    try:
        root.get_submodule(name)
    except AttributeError:
        return False
    return True


def flux_adapter(pipe: object) -> Adapter:
    transformer = component(pipe, "transformer")
    t5 = T5Tower("text_encoder_2", component(pipe, "text_encoder_2"), component(pipe, "tokenizer_2"),
                 penultimate=False)
    t5_is_editable(t5)
    clip = TextTower("text_encoder", component(pipe, "text_encoder"), component(pipe, "tokenizer"),
                     penultimate=False, pooled=True, progressive=False)
    pooled = Adapter("flux", [clip], [linear_site(transformer, "transformer", POOLED_SITE, clip.width)])
    return Adapter("flux", [t5], [linear_site(transformer, "transformer", TOKEN_SITE, t5.width)], also=[pooled])
