"""What an adapter describes: a pipeline's text towers (run layer by layer), their editable fc2 layers and the
linear sites that read the towers' features (the UNet's cross-attention K/V, FLUX's context embedders).
Families live in their own modules (``sd.py``, ``sdxl.py``, ``flux.py``) and register themselves in
``registry.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

LEGACY_TEXT_PREFIX = "text_model."  # transformers < 5 nested CLIPTextModel's modules under this name


class UnsupportedModelError(ValueError):
    """The pipeline's layout is not one ErasePro knows how to edit."""


def _causal_mask(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    mask = torch.full((n, n), torch.finfo(dtype).min, dtype=dtype, device=device).triu(1)
    return mask[None, None]


@dataclass
class TextTower:
    """One CLIP text encoder, run layer by layer so states can be carried and edited in place."""

    component: str
    model: nn.Module
    tokenizer: object
    penultimate: bool  # SDXL reads hidden_states[-2]; SD-1/2 read the final-normed last state
    pooled: bool = False  # the sites read only the EOS state (FLUX's pooled CLIP), not every token
    progressive: bool = True  # whether the progressive stage may edit this tower's feed-forward layers

    # Causal: a token's state does not depend on the tokens after it, so prompts may be encoded unpadded.
    causal = True
    # Set where a tower reads its model's states otherwise than the class it derives from (SD-3's projected pooled
    # CLIP): keeps statistics keyed by model identity apart from those of the same weights read another way.
    reading = ""

    @property
    def _inner(self) -> nn.Module:
        return getattr(self.model, "text_model", self.model)

    @property
    def layers(self) -> nn.ModuleList:
        return self._inner.encoder.layers

    @property
    def n_context_layers(self) -> int:
        """How many layers feed the context the UNet reads (all but the last for SDXL)."""
        return len(self.layers) - (1 if self.penultimate else 0)

    @property
    def width(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def fc2(self, i: int) -> nn.Linear:
        return self.layers[i].mlp.fc2

    def fc2_name(self, i: int) -> str:
        """On-disk key (legacy transformers naming, which every published SD checkpoint uses)."""
        return f"{self.component}.{LEGACY_TEXT_PREFIX}encoder.layers.{i}.mlp.fc2.weight"

    def pad(self, rows: list[list[int]], length: int) -> torch.Tensor:
        pad_id = self.tokenizer.pad_token_id
        pad_id = self.tokenizer.eos_token_id if pad_id is None else pad_id
        out = torch.full((len(rows), length), int(pad_id), dtype=torch.long)
        for r, ids in enumerate(rows):
            out[r, : len(ids)] = torch.tensor(ids[:length])
        return out.to(self.device)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self._inner.embeddings(input_ids=ids)

    def layer(
        self, i: int, h: torch.Tensor, delta: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run layer ``i``; returns (output, fc2 input). ``delta`` is added to fc2's weight on the fly."""
        captured: list[torch.Tensor] = []

        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            captured.append(args[0])
            if delta is not None:
                return out + args[0] @ delta.to(out.dtype).T
            return out

        handle = self.fc2(i).register_forward_hook(hook)
        try:
            out = self._run(i, h)
        finally:
            handle.remove()
        return out, captured[0]

    def _run(self, i: int, h: torch.Tensor) -> torch.Tensor:
        out = self.layers[i](h, attention_mask=_causal_mask(h.shape[1], h.dtype, h.device))
        return out[0] if isinstance(out, tuple) else out

    def length_for(self, longest: int) -> int:
        """How long to pad a batch whose longest prompt has ``longest`` tokens: just that for a causal tower,
        the tokenizer's full length (what the pipeline encodes) for a bidirectional one."""
        return longest if self.causal else int(self.tokenizer.model_max_length)

    def embed_at(self, ids: torch.Tensor, offsets: torch.Tensor | int = 0) -> torch.Tensor:
        """Embeddings of tokens whose row r starts at position ``offsets[r]`` of its prompt."""
        start = torch.as_tensor(offsets, device=ids.device).view(-1, 1)
        pos = torch.arange(ids.shape[1], device=ids.device)[None] + start
        return self._inner.embeddings(input_ids=ids, position_ids=pos.expand(ids.shape[0], -1))

    def layer_cached(
        self, i: int, h: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Layer ``i`` on tokens that follow cached prefixes: ``past = (keys, values, lengths)``, row r's prefix
        being the first ``lengths[r]`` of its keys/values (b × heads × P × head_dim).

        The same computation as the CLIP layer (pre-norm causal attention, then the MLP), written out so a prefix
        common to many prompts is encoded once: token j of row r attends to its prefix and to its tokens ≤ j.
        Returns (output, fc2 input, this call's own keys/values).
        """
        h, own = self.attend_cached(i, h, past)
        return (*self.mlp_cached(i, h), own)

    def attend_cached(
        self, i: int, h: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The first half of :meth:`layer_cached` (its attention): (post-attention state, own keys/values)."""
        layer = self.layers[i]
        attn = layer.self_attn
        b, s, _ = h.shape
        x = layer.layer_norm1(h)
        split = lambda t: t.view(b, s, attn.num_heads, attn.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(attn.q_proj(x)), split(attn.k_proj(x)), split(attn.v_proj(x))
        own = (k, v)
        mask = torch.ones(s, s, dtype=torch.bool, device=h.device).tril()[None, None]
        if past is not None:
            n_past = past[0].shape[2]
            seen = torch.arange(n_past, device=h.device)[None] < past[2].to(h.device)[:, None]  # b × P
            mask = torch.cat([seen[:, None, None, :].expand(b, 1, s, n_past), mask.expand(b, 1, s, s)], -1)
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
        return h + attn.out_proj(o.transpose(1, 2).reshape(b, s, -1)), own

    def mlp_cached(self, i: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The second half of :meth:`layer_cached` (its MLP) on the post-attention state ``h``: (output, fc2
        input). Run again on the same ``h`` it gives the same bytes: the progressive stage keeps ``h`` (d wide)
        instead of the fc2 input (4·d wide) until the layer's edit is known."""
        layer = self.layers[i]
        mlp = layer.mlp
        xin = mlp.activation_fn(mlp.fc1(layer.layer_norm2(h)))
        return h + mlp.fc2(xin), xin

    def to_context(self, h: torch.Tensor) -> torch.Tensor:
        """Context from the state after ``n_context_layers`` layers."""
        return h if self.penultimate else self._inner.final_layer_norm(h)


@dataclass
class KVSite:
    key: str  # on-disk key, e.g. unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight
    module: nn.Linear


@dataclass
class Adapter:
    """One context space: towers whose features concatenate (along features) into what ``kv_sites`` read.

    ``also`` holds further, independent context spaces of the same pipeline (FLUX: the pooled CLIP path beside
    the T5 tokens); ``erase`` solves each space on its own and writes one delta.

    ``segments`` (SD-3) splits one space along the *sequence*: the sites read each segment's tokens one after
    another, each segment's features (its towers concatenated along features) zero-padded to the sites' width;
    ``towers`` then lists every segment's towers, and the space is solved once over all segments' columns.
    """

    family: str  # "sd" (SD-1.x/2.x layout), "sdxl", "flux", …
    towers: list[TextTower]
    kv_sites: list[KVSite]
    also: list[Adapter] = field(default_factory=list)
    sampling: tuple[int, float] = (25, 5.0)  # the family's default (steps, guidance) for generation
    # Keyword arguments the pipeline's __call__ needs to encode prompts exactly as erase does (FLUX: T5 length).
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    segments: list[Adapter] = field(default_factory=list)

    @property
    def context_width(self) -> int:
        if self.segments:  # every segment is zero-padded to what the sites read
            return int(self.kv_sites[0].module.in_features)
        return sum(t.width for t in self.towers)

    @property
    def spaces(self) -> list[Adapter]:
        """Every context space, the primary one (what ``extra_context``/``context_features`` address) first."""
        return [self, *self.also]


def clip_towers_are_editable(towers: list[TextTower]) -> None:
    for t in towers:
        if not hasattr(t._inner, "encoder") or not hasattr(t.layers[0], "mlp"):
            raise UnsupportedModelError(f"{t.component} is not a CLIP text encoder")


def unet_kv_sites(unet: nn.Module, width: int) -> list[KVSite]:
    """Every cross-attention K/V projection of a diffusers UNet, checked to read ``width`` context features."""
    sites = [
        KVSite(f"unet.{name}.weight", mod)
        for name, mod in unet.named_modules()
        if name.endswith(("attn2.to_k", "attn2.to_v")) and isinstance(mod, nn.Linear)
    ]
    if not sites:
        raise UnsupportedModelError("the UNet has no cross-attention (attn2.to_k/to_v) layers")
    if any(s.module.in_features != width for s in sites):
        raise UnsupportedModelError(
            f"cross-attention reads {sites[0].module.in_features} features but the text towers give {width}"
        )
    return sites


def component(pipe: object, name: str) -> Any:
    value = getattr(pipe, name, None)
    if value is None:
        raise UnsupportedModelError(f"{type(pipe).__name__} has no {name}")
    return value


def resolve_parameter(pipe: object, key: str) -> torch.Tensor:
    """The live parameter for an on-disk delta key, under either transformers naming."""
    component, _, name = key.partition(".")
    module = getattr(pipe, component, None)
    if not isinstance(module, nn.Module):
        raise KeyError(f"pipeline has no component {component!r} (delta key {key!r})")
    params = dict(module.named_parameters())
    candidates = [name]
    if name.startswith(LEGACY_TEXT_PREFIX):
        candidates.append(name[len(LEGACY_TEXT_PREFIX) :])
    else:
        candidates.append(LEGACY_TEXT_PREFIX + name)
    for c in candidates:
        if c in params:
            return params[c]
    raise KeyError(f"pipeline's {component} has no parameter {name!r} (delta key {key!r})")
