"""SD-1.x/2.x: one CLIPTextModel; the context is the final-layer-normed last hidden state."""

from __future__ import annotations

from erasepro_core.adapters.base import Adapter, TextTower, clip_towers_are_editable, component, unet_kv_sites


def sd_adapter(pipe: object) -> Adapter:
    towers = [TextTower("text_encoder", component(pipe, "text_encoder"), component(pipe, "tokenizer"),
                        penultimate=False)]
    clip_towers_are_editable(towers)
    return Adapter("sd", towers, unet_kv_sites(component(pipe, "unet"), sum(t.width for t in towers)))
