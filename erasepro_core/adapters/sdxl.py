"""SDXL: two CLIP towers; the context concatenates each tower's penultimate hidden state (no final norm)."""

from __future__ import annotations

from erasepro_core.adapters.base import Adapter, TextTower, clip_towers_are_editable, component, unet_kv_sites


def sdxl_adapter(pipe: object) -> Adapter:
    towers = [
        TextTower("text_encoder", component(pipe, "text_encoder"), component(pipe, "tokenizer"), penultimate=True),
        TextTower("text_encoder_2", component(pipe, "text_encoder_2"), component(pipe, "tokenizer_2"),
                  penultimate=True),
    ]
    clip_towers_are_editable(towers)
    return Adapter("sdxl", towers, unet_kv_sites(component(pipe, "unet"), sum(t.width for t in towers)))
