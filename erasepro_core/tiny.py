"""Pipelines built from configs with random weights: the offline stand-ins for SD-1.x, SDXL, FLUX and SD-3.

They use the real CLIP tokenizer and the real diffusers/transformers classes, so every code path that runs
on a downloaded checkpoint runs on them unchanged. Used by tests, the demo fallback and the benchmarks.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from erasepro_core.tokenizer import clip_tokenizer, t5_tokenizer


def _text_config(hidden: int, layers: int, heads: int, max_len: int, **kw) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=max_len,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        **kw,
    )


def _scheduler() -> DDIMScheduler:
    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )


def _vae(blocks: tuple[int, ...]) -> AutoencoderKL:
    n = len(blocks)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=blocks,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1, norm_num_groups=min(32, blocks[0]), sample_size=32,
    )


def tiny_sd_pipeline(
    seed: int = 0,
    *,
    text_hidden: int = 64,
    text_layers: int = 4,
    cross_attention_dim: int = 64,
    max_length: int = 77,
) -> StableDiffusionPipeline:
    """An SD-1.x-layout pipeline small enough for unit tests (a few MB, 32x32 images)."""
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_text_config(text_hidden, text_layers, 4, max_length))
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_attention_dim,
        attention_head_dim=8, norm_num_groups=16,
    )
    return StableDiffusionPipeline(
        vae=_vae((32, 32)), text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(max_length),
        unet=unet.eval(), scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def sd14_sized_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """SD-1.4's text encoder (CLIP ViT-L/14 text tower) and UNet (320/640/1280/1280), random weights.

    The VAE is tiny: erasure never touches it and the benchmark excludes loading.
    """
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_text_config(768, 12, 12, 77))
    unet = UNet2DConditionModel(
        sample_size=64, block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
        attention_head_dim=8, layers_per_block=2,
    )
    return StableDiffusionPipeline(
        vae=_vae((32, 32)), text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(77),
        unet=unet.eval(), scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """An SDXL-layout pipeline: two text encoders whose penultimate states concatenate to the context."""
    torch.manual_seed(seed)
    te1 = CLIPTextModel(_text_config(32, 3, 4, 77))
    te2 = CLIPTextModelWithProjection(_text_config(48, 3, 4, 77, projection_dim=32))
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=80,
        attention_head_dim=(2, 4), norm_num_groups=16, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=32 + 6 * 8,
    )
    return StableDiffusionXLPipeline(
        vae=_vae((32, 32)), text_encoder=te1.eval(), text_encoder_2=te2.eval(),
        tokenizer=clip_tokenizer(77), tokenizer_2=clip_tokenizer(77), unet=unet.eval(),
        scheduler=_scheduler(),
    )


def tiny_flux_pipeline(seed: int = 0, *, t5_width: int = 32, t5_layers: int = 2, max_sequence_length: int = 32
                       ) -> FluxPipeline:
    """A FLUX.1-layout pipeline (CLIP + T5, a one-double/one-single-block transformer, 32x32 images).

    The T5 tokenizer is a Unigram model over the CLIP vocabulary's words (:func:`t5_tokenizer`); its
    ``model_max_length`` is the ``max_sequence_length`` the pipeline pads T5 prompts to.
    """
    torch.manual_seed(seed)
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tokenizer(max_sequence_length)), d_model=t5_width, d_kv=8, d_ff=2 * t5_width,
        num_layers=t5_layers, num_heads=4, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
    ))
    clip = CLIPTextModel(_text_config(32, 2, 4, 77))
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=t5_width, pooled_projection_dim=32, axes_dims_rope=(2, 2, 4),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1,
        norm_num_groups=8, sample_size=32, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0,
        scaling_factor=1.0,
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=clip.eval(), tokenizer=clip_tokenizer(77),
        text_encoder_2=t5.eval(), tokenizer_2=t5_tokenizer(max_sequence_length), transformer=transformer.eval(),
    )


def write_tiny_flux(directory: str | os.PathLike, seed: int = 0) -> Path:
    """Save :func:`tiny_flux_pipeline` as a diffusers folder (what the CLI and the service load)."""
    directory = Path(directory)
    tiny_flux_pipeline(seed).save_pretrained(str(directory), safe_serialization=True)
    return directory


def tiny_sd3_pipeline(seed: int = 0, *, t5_width: int = 96, t5_layers: int = 2, max_sequence_length: int = 32,
                      with_t5: bool = True) -> StableDiffusion3Pipeline:
    """An SD-3-layout pipeline: CLIP-L and CLIP-G (with projections, CLIP-G padded with ``!`` as SD-3's is), T5
    and a two-block MMDiT whose ``context_embedder`` reads T5's width (CLIP's 32 + 48 zero-padded to it), 32x32.

    The projections are narrower than the towers (24 and 40, pooled 64) so nothing may take one for the other.
    ``with_t5=False`` leaves ``text_encoder_3`` out (SD-3 then feeds zeros for the T5 tokens).
    """
    torch.manual_seed(seed)
    clip_l = CLIPTextModelWithProjection(_text_config(32, 2, 4, 77, projection_dim=24))
    clip_g = CLIPTextModelWithProjection(_text_config(48, 3, 4, 77, projection_dim=40))
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tokenizer(max_sequence_length)), d_model=t5_width, d_kv=8, d_ff=2 * t5_width,
        num_layers=t5_layers, num_heads=4, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
    ))
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=t5_width, caption_projection_dim=16, pooled_projection_dim=64,
        pos_embed_max_size=16,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(16, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1,
        norm_num_groups=8, sample_size=32, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0,
        scaling_factor=1.0,
    )
    tok_g = clip_tokenizer(77)
    tok_g.pad_token = "!"
    return StableDiffusion3Pipeline(
        transformer=transformer.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=clip_l.eval(), tokenizer=clip_tokenizer(77), text_encoder_2=clip_g.eval(), tokenizer_2=tok_g,
        text_encoder_3=t5.eval() if with_t5 else None,
        tokenizer_3=t5_tokenizer(max_sequence_length) if with_t5 else None,
    )


def write_tiny_sd3(directory: str | os.PathLike, seed: int = 0) -> Path:
    """Save :func:`tiny_sd3_pipeline` as a diffusers folder (what the CLI and the service load)."""
    directory = Path(directory)
    tiny_sd3_pipeline(seed).save_pretrained(str(directory), safe_serialization=True)
    return directory


def write_tiny_clip(directory: str | os.PathLike, seed: int = 0) -> Path:
    """A random-weights CLIP (text + vision towers, 32-pixel images) with the real CLIP tokenizer, saved as a
    transformers folder: what the CLIP judge's tests point ``ERASEPRO_CLIP_MODEL`` at (its verdicts mean nothing)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    text = _text_config(32, 2, 2, 77).to_dict()
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    directory = Path(directory)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(
        str(directory), safe_serialization=True)
    clip_tokenizer(77).save_pretrained(str(directory))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        str(directory))
    return directory


# T5 v1.1 encoder sizes (d_model, d_ff, layers, heads); FLUX.1 uses xxl (4.7B parameters, ~19 GB in fp32).
T5_SIZES: dict[str, tuple[int, int, int, int]] = {
    "small": (512, 1024, 8, 6), "base": (768, 2048, 12, 12), "large": (1024, 2816, 24, 16),
    "xl": (2048, 5120, 24, 32), "xxl": (4096, 10240, 24, 64),
}


def _full_t5(t5: str, max_sequence_length: int) -> tuple[T5EncoderModel, T5TokenizerFast]:
    """A random T5 encoder of the :data:`T5_SIZES` entry ``t5`` (real vocabulary size) and its tokenizer."""
    d_model, d_ff, layers, heads = T5_SIZES[t5]
    tok = t5_tokenizer(max_sequence_length)
    encoder = T5EncoderModel(T5Config(
        vocab_size=max(32128, len(tok)), d_model=d_model, d_kv=64, d_ff=d_ff, num_layers=layers, num_heads=heads,
        feed_forward_proj="gated-gelu",
    ))
    return encoder, tok


def flux_text_path_pipeline(t5: str = "xl", max_sequence_length: int = 512, seed: int = 0) -> FluxPipeline:
    """FLUX.1's text path at full size but for T5 (``t5`` names a :data:`T5_SIZES` entry): CLIP ViT-L/14's text
    tower, and the transformer's ``context_embedder`` and pooled ``text_embedder`` into its 3072-wide stream.

    The transformer has no blocks and the VAE is tiny: erasure never runs them (for benchmarks, not sampling).
    """
    torch.manual_seed(seed)
    encoder, tok = _full_t5(t5, max_sequence_length)
    d_model = encoder.config.d_model
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=0, num_single_layers=0, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=d_model, pooled_projection_dim=768, guidance_embeds=True,
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae((32, 32)),
        text_encoder=CLIPTextModel(_text_config(768, 12, 12, 77)).eval(), tokenizer=clip_tokenizer(77),
        text_encoder_2=encoder.eval(), tokenizer_2=tok, transformer=transformer.eval(),
    )


def sd3_text_path_pipeline(t5: str = "xxl", max_sequence_length: int = 256, seed: int = 0
                           ) -> StableDiffusion3Pipeline:
    """SD-3's text path at full size but for T5 (``t5`` names a :data:`T5_SIZES` entry; SD-3's is xxl): CLIP ViT-L/14
    and ViT-bigG/14 text towers with projections, and the transformer's ``context_embedder`` (T5 width → 1536, as
    SD-3 Medium) and pooled ``text_embedder`` (2048 → 1536).

    The transformer has no blocks and the VAE is tiny: erasure never runs them (for benchmarks, not sampling).
    """
    torch.manual_seed(seed)
    encoder, tok = _full_t5(t5, max_sequence_length)
    d_model = encoder.config.d_model
    transformer = SD3Transformer2DModel(
        sample_size=128, patch_size=2, in_channels=16, num_layers=0, attention_head_dim=64, num_attention_heads=24,
        joint_attention_dim=d_model, caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
    )
    tok_g = clip_tokenizer(77)
    tok_g.pad_token = "!"
    return StableDiffusion3Pipeline(
        transformer=transformer.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_vae((32, 32)),
        text_encoder=CLIPTextModelWithProjection(_text_config(768, 12, 12, 77, projection_dim=768)).eval(),
        tokenizer=clip_tokenizer(77),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(1280, 32, 20, 77, projection_dim=1280)).eval(),
        tokenizer_2=tok_g, text_encoder_3=encoder.eval(), tokenizer_3=tok,
    )

