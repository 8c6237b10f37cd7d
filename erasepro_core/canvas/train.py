"""Train the canvas-world text-to-image model from a seed, in resumable stages.

1. ``clip`` -- a ``CLIPTextModel`` trained *contrastively* (CLIP's symmetric InfoNCE) against a small image
   encoder on (render, caption) pairs, with one hard negative caption per image (an object's colour or kind,
   the artist, or the character changed); then frozen. The image encoder is discarded.
2. ``vae``  -- an ``AutoencoderKL`` 32x32x3 -> 16x16x4, latent mean/std folded into the quant convs.
3. ``unet`` -- a ``UNet2DConditionModel`` on precomputed latents and caption states (eps-prediction,
   min-SNR-5, 10 % empty captions, AdamW, EMA); checkpoints every ``ckpt_every`` steps; resumable.
4. ``export`` -- the EMA UNet in a float16 ``StableDiffusionPipeline`` at ``out/pipeline``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from erasepro_core.canvas.captions import describe, preserve_prompts, training_caption
from erasepro_core.canvas.config import CanvasTrainConfig
from erasepro_core.canvas.evaluate import style_factors
from erasepro_core.canvas.world import (
    ARTIST_STYLE,
    ARTISTS,
    CHARACTERS,
    COLOURS,
    DEFAULT_STYLE,
    OBJECTS,
    STROKES,
    Obj,
    Scene,
    character_object,
    render,
    render_dataset,
)
from erasepro_core.delta import save_tensors
from erasepro_core.io import write_json_atomic
from erasepro_core.prompt_files import PRESERVE_FILE
from erasepro_core.shapes.train import (
    ask_loaders_for_float32,
    begin_run,
    beta_schedule,
    build_pipeline,
    encode_texts,
    fit_unet,
    fit_vae,
    tokenize,
)

Log = Callable[[str], None] | None


def _log(msg: str, log: Log) -> None:
    (log or print)(msg, flush=True) if log is None else log(msg)


def make_text_encoder(cfg: CanvasTrainConfig):
    """A randomly initialised CLIPTextModel over the real CLIP vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=cfg.text_hidden, intermediate_size=4 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_length, hidden_act="quick_gelu", projection_dim=cfg.text_hidden,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))


def make_vae():
    """AutoencoderKL (32, 64): 32x32x3 <-> 16x16x4."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=32, sample_size=32, scaling_factor=1.0, mid_block_add_attention=False,
    )


def make_unet(cfg: CanvasTrainConfig):
    """UNet on 16x16x4 latents; cross-attention at 8x8 and 4x4 (and the mid block)."""
    from diffusers import UNet2DConditionModel

    n = len(cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=tuple(cfg.unet_channels),
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=cfg.text_hidden, attention_head_dim=(2,) + (4,) * (n - 1), norm_num_groups=16,
    )


class ImageEncoder(torch.nn.Module):
    """The CLIP image tower used only to train the text encoder: a 4-stage CNN and a projection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        chans = (3, 64, 128, 192)
        layers: list[torch.nn.Module] = []
        for i in range(3):
            layers += [torch.nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1),
                       torch.nn.GroupNorm(8, chans[i + 1]), torch.nn.GELU(),
                       torch.nn.Conv2d(chans[i + 1], chans[i + 1], 3, padding=1),
                       torch.nn.GroupNorm(8, chans[i + 1]), torch.nn.GELU()]
        self.body = torch.nn.Sequential(*layers)
        self.proj = torch.nn.Linear(192 * 16, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.body(x).flatten(1))


def _images_to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _stroke_siblings() -> dict[str, tuple[str | None, ...]]:
    """Per artist, the looks with its background and texture but another stroke (``None``: the default look)."""
    looks = {**{style: a for a, style in ARTIST_STYLE.items()}, DEFAULT_STYLE: None}
    return {a: tuple(looks[(bg, s, tex)] for s in STROKES if s != stroke and (bg, s, tex) in looks)
            for a, (bg, stroke, tex) in ARTIST_STYLE.items()}


#: Artists whose only difference from a given artist is the stroke: the hard negatives that make the towers
#: encode it (random artists almost always differ in background or texture, which the towers then learn alone).
STROKE_SIBLINGS = _stroke_siblings()


def negative_scene(scene: Scene, rng: np.random.Generator, stroke_share: float = 0.0) -> Scene:
    """A scene that differs from ``scene`` in one thing a caption names (a hard negative for CLIP training); an
    artist swap goes to a stroke sibling (:data:`STROKE_SIBLINGS`) with probability ``stroke_share``."""
    objs = list(scene.objects)
    for _ in range(20):
        r = rng.random()
        if r < 0.3 and scene.artist is not None:
            siblings = STROKE_SIBLINGS[scene.artist]
            if siblings and rng.random() < stroke_share:
                return Scene(scene.objects, siblings[int(rng.integers(len(siblings)))])
            other = ARTISTS[rng.integers(len(ARTISTS))]
            if other != scene.artist:
                return Scene(scene.objects, other if rng.random() < 0.8 else None)
        elif r < 0.55 and objs:
            i = int(rng.integers(len(objs)))
            if objs[i].character:
                continue
            c = COLOURS[rng.integers(len(COLOURS))]
            if c != objs[i].colour:
                objs[i] = Obj(objs[i].kind, c)
                return Scene(tuple(objs), scene.artist)
        elif r < 0.8 and objs:
            i = int(rng.integers(len(objs)))
            if objs[i].character:
                other = CHARACTERS[rng.integers(len(CHARACTERS))]
                new = character_object(other)
                if other != objs[i].character and new.kind not in {o.kind for o in objs}:
                    objs[i] = new
                    return Scene(tuple(objs), scene.artist)
                continue
            k = OBJECTS[rng.integers(len(OBJECTS))]
            if k not in {o.kind for o in objs}:
                objs[i] = Obj(k, objs[i].colour)
                return Scene(tuple(objs), scene.artist)
        elif len(objs) >= 2:
            i, j = rng.choice(len(objs), 2, replace=False)
            if objs[i].colour != objs[j].colour and not (objs[i].character or objs[j].character):
                objs[i], objs[j] = Obj(objs[i].kind, objs[j].colour), Obj(objs[j].kind, objs[i].colour)
                return Scene(tuple(objs), scene.artist)
        else:
            return Scene(scene.objects, None if scene.artist else ARTISTS[rng.integers(len(ARTISTS))])
    return Scene(scene.objects, None if scene.artist else ARTISTS[0])


def _cached_dataset(out: Path, cfg: CanvasTrainConfig) -> tuple[np.ndarray, list[Scene]]:
    """``render_dataset`` with the images cached in ``out`` (scenes are cheap to re-draw from the same seed)."""
    from erasepro_core.canvas.world import sample_scene

    cache = out / f"renders-{cfg.seed}-{cfg.n_images}.npy"
    if cache.exists():
        rng = np.random.default_rng([cfg.seed, 1])
        scenes = [sample_scene(rng) for _ in range(cfg.n_images)]
        return np.load(cache), scenes
    imgs, scenes = render_dataset(cfg.n_images, seed=cfg.seed)
    np.save(cache, imgs)
    return imgs, scenes


def build_captions(cfg: CanvasTrainConfig, scenes: list[Scene]) -> tuple[list[str], list[str]]:
    """``captions_per_image`` training captions per scene (flattened, scene-major) and one hard negative each."""
    rng = np.random.default_rng([cfg.seed, 2])
    texts = [training_caption(s, rng) for s in scenes for _ in range(cfg.captions_per_image)]
    negs = [training_caption(negative_scene(s, rng, cfg.clip_stroke_negatives), rng) if s.objects else training_caption(
        Scene((Obj(OBJECTS[rng.integers(12)], COLOURS[rng.integers(8)]),), s.artist), rng) for s in scenes]
    return texts, negs


class ThreadTuner:
    """Pick the faster of 1 and ``max_threads`` torch threads, re-checked every ``period`` steps.

    On a shared 2-core machine two threads are twice as fast when the machine is idle and several times
    *slower* when another process holds a core (each step waits for its slowest thread).
    """

    def __init__(self, max_threads: int, period: int = 200, probe: int = 6) -> None:
        self.choices = sorted({1, max(1, max_threads)})
        self.period, self.probe = period, probe
        self.times: dict[int, list[float]] = {}
        self.current = self.choices[-1]
        self._t = 0.0

    def before(self, step: int) -> None:
        if len(self.choices) > 1:
            phase = step % self.period
            if phase < self.probe * len(self.choices):
                self.current = self.choices[phase // self.probe]
            elif phase == self.probe * len(self.choices):
                self.current = min(self.times, key=lambda k: sorted(self.times[k])[len(self.times[k]) // 2])
                self.times = {}
            torch.set_num_threads(self.current)
        self._t = time.perf_counter()

    def after(self, step: int) -> None:
        if step % self.period < self.probe * len(self.choices) and step % self.probe:  # skip each probe's first
            self.times.setdefault(self.current, []).append(time.perf_counter() - self._t)


# ----------------------------------------------------------------------------------------------- stages


def _trim(ids: torch.Tensor) -> torch.Tensor:
    """Drop padding columns after the batch's last first-EOS: with CLIP's causal mask the states up to each
    prompt's first EOS do not depend on later positions, so the pooled output is unchanged (and ~2x cheaper)."""
    last = int((ids == 49407).int().argmax(1).max()) + 1
    return ids[:, :last]


def pooled(te, ids: torch.Tensor) -> torch.Tensor:
    """The state at the first EOS (CLIP's pooled output)."""
    states = te(ids)[0]
    first = (ids == 49407).int().argmax(1)
    return states[torch.arange(len(ids)), first]


def train_clip(cfg: CanvasTrainConfig, out: Path, images: torch.Tensor, ids: torch.Tensor, neg_ids: torch.Tensor,
               log: Log = None):
    """Stage 1: contrastive text/image training; the text encoder is saved to ``out/text_encoder``."""
    torch.manual_seed(cfg.seed)
    te = make_text_encoder(cfg)
    img_enc = ImageEncoder(cfg.text_hidden)
    text_proj = torch.nn.Linear(cfg.text_hidden, cfg.text_hidden, bias=False)
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = list(te.parameters()) + list(img_enc.parameters()) + list(text_proj.parameters()) + [logit_scale]
    opt = torch.optim.AdamW(params, lr=cfg.clip_lr, weight_decay=0.05)
    g = torch.Generator().manual_seed(cfg.seed)
    k = cfg.captions_per_image
    t0 = time.time()
    te.train()
    tuner = ThreadTuner(cfg.threads)
    for step in range(cfg.clip_steps):
        tuner.before(step)
        lr = cfg.clip_lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / cfg.clip_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(images), (cfg.clip_batch,), generator=g)
        cap = idx * k + torch.randint(k, (cfg.clip_batch,), generator=g)
        x = images[idx]
        # light photometric jitter so the image tower reads shapes, not exact pixel values
        x = (x * (1 + 0.1 * torch.randn(len(x), 1, 1, 1, generator=g)) + 0.05 * torch.randn(x.shape, generator=g))
        zi = F.normalize(img_enc(x), dim=-1)
        zt = F.normalize(text_proj(pooled(te, _trim(torch.cat([ids[cap], neg_ids[idx]])))), dim=-1)
        scale = logit_scale.exp().clamp(max=100)
        logits = scale * zi @ zt.T  # (B, 2B): the batch's captions, then each image's hard negative
        target = torch.arange(cfg.clip_batch)
        # the same scene can appear twice in a batch: mask its other captions out of the negatives
        same = (idx[:, None] == idx[None, :]) & ~torch.eye(cfg.clip_batch, dtype=torch.bool)
        logits_pos = logits[:, : cfg.clip_batch].masked_fill(same, -1e4)
        li = F.cross_entropy(torch.cat([logits_pos, logits[:, cfg.clip_batch:]], 1), target)
        lt = F.cross_entropy(logits_pos.T, target)
        loss = (li + lt) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        tuner.after(step)
        if step % 100 == 0 or step == cfg.clip_steps - 1:
            with torch.no_grad():
                acc = (logits_pos.argmax(1) == target).float().mean().item()
                pos, neg = logits[:, : cfg.clip_batch].diagonal(), logits[:, cfg.clip_batch :].diagonal()
                hard = (pos > neg).float().mean().item()
            _log(f"[clip] step {step} loss {loss.item():.4f} i2t acc {acc:.3f} beats hard negative {hard:.3f} "
                 f"scale {scale.item():.1f} ({time.time() - t0:.0f}s)", log)
    te.eval()
    te.save_pretrained(out / "text_encoder", safe_serialization=True)
    write_json_atomic(out / "clip_done.json", {"seconds": time.time() - t0})
    return te, img_enc, text_proj


@torch.no_grad()
def clip_heldout_accuracy(te, img_enc, text_proj, images: torch.Tensor, texts: list[str], negs: list[str], tok
                          ) -> dict[str, float]:
    """Retrieval accuracy among 256 and the hard-negative win rate, on fresh scenes with held-out phrasings."""
    te.eval()
    img_enc.eval()
    zi = F.normalize(img_enc(images), dim=-1)
    zt = F.normalize(text_proj(pooled(te, tokenize(tok, texts))), dim=-1)
    zn = F.normalize(text_proj(pooled(te, tokenize(tok, negs))), dim=-1)
    sim = zi @ zt.T
    return {"i2t_top1": (sim.argmax(1) == torch.arange(len(zi))).float().mean().item(),
            "beats_hard_negative": (sim.diagonal() > (zi * zn).sum(-1)).float().mean().item()}


def train_vae(cfg: CanvasTrainConfig, out: Path, images: torch.Tensor, log: Log = None):
    """Stage 2 (:func:`erasepro_core.shapes.train.fit_vae`, with an L1 term and the thread tuner): the VAE; latent
    channel mean/std folded into the quant convs; saved to ``out/vae``."""
    torch.manual_seed(cfg.seed + 1)
    vae = make_vae()
    t0 = time.time()
    mean, std = fit_vae(cfg, vae, images, l1_weight=0.1, chunk=1024, timer=ThreadTuner(cfg.threads), log=log)
    with torch.no_grad():
        z = vae.encode(images[:1024]).latent_dist.mean
        mse = F.mse_loss(vae.decode(z).sample, images[:1024]).item()
        _log(f"[vae] folded mean {mean.tolist()} std {std.tolist()}; recon mse {mse:.5f}", log)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    write_json_atomic(out / "vae_done.json", {"seconds": time.time() - t0, "recon_mse": mse})
    return vae


def train_unet(cfg: CanvasTrainConfig, out: Path, latents: torch.Tensor, emb: torch.Tensor, empty: torch.Tensor,
               gap_batch: dict[str, torch.Tensor], resume: bool = True, log: Log = None,
               stop_at: int | None = None) -> dict[str, torch.Tensor]:
    """Stage 3 (:func:`erasepro_core.shapes.train.fit_unet`, with a cool-down and the thread tuner). ``emb``:
    (n_images, k, L, H) caption states per image. Returns the EMA state."""
    torch.manual_seed(cfg.seed + 2)
    return fit_unet(cfg, out, make_unet(cfg), latents, emb, empty, gap_batch, resume=resume, log=log,
                    stop_at=stop_at, cool_down=True, timer=ThreadTuner(cfg.threads))


def export_pipeline(cfg: CanvasTrainConfig, out: Path, dest: Path, ema: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the float16 pipeline (EMA UNet) to ``dest``; loads with ``from_pretrained(dest)``."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    te = CLIPTextModel.from_pretrained(out / "text_encoder", torch_dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(out / "vae", torch_dtype=torch.float32)
    unet = make_unet(cfg)
    state = ema or load_file(str(out / "unet_ckpt" / "ema.safetensors"))
    unet.load_state_dict({k: v.float() for k, v in state.items()})
    pipe = build_pipeline(te, vae, unet, cfg.max_length).to(torch.float16)
    pipe.save_pretrained(dest, safe_serialization=True)
    (Path(dest) / PRESERVE_FILE).write_text("\n".join(preserve_prompts()) + "\n", encoding="utf-8")
    ask_loaders_for_float32(dest)
    return Path(dest)


# ----------------------------------------------------------------------------------------------- driver


def run_training(cfg: CanvasTrainConfig, out: str | os.PathLike, *, resume: bool = True, stop_at: int | None = None,
                 log: Log = None) -> Path:
    """All stages; returns the exported pipeline directory ``out/pipeline``."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    from erasepro_core.tokenizer import clip_tokenizer

    out, t_all = begin_run(cfg, out), time.time()
    _log(f"[data] rendering {cfg.n_images} scenes", log)
    imgs_np, scenes = _cached_dataset(out, cfg)
    images = _images_to_tensor(imgs_np)
    tok = clip_tokenizer(cfg.max_length)
    texts, negs = build_captions(cfg, scenes)
    ids, neg_ids = tokenize(tok, texts), tokenize(tok, negs)
    t_render = time.time() - t_all
    _log(f"[data] {len(texts)} captions ({t_render:.0f}s)", log)

    # fresh scenes with held-out phrasings: CLIP retrieval and the UNet's loss gap
    ho_np, ho_scenes = render_dataset(256, seed=cfg.seed + 99)
    rng = np.random.default_rng(cfg.seed + 99)
    ho_texts = [describe(s, rng, heldout=True) for s in ho_scenes]
    ho_negs = [describe(negative_scene(s, rng, cfg.clip_stroke_negatives), rng, heldout=True) for s in ho_scenes]
    ho_images = _images_to_tensor(ho_np)

    if resume and (out / "clip_done.json").exists():
        te = CLIPTextModel.from_pretrained(out / "text_encoder", torch_dtype=torch.float32).eval()
    else:
        te, img_enc, text_proj = train_clip(cfg, out, images, ids, neg_ids, log)
        acc = clip_heldout_accuracy(te, img_enc, text_proj, ho_images, ho_texts, ho_negs, tok)
        factors = style_factors(tok, te)
        _log(f"[clip] held-out phrasings, fresh scenes: {acc}; style factors in the text tower: {factors}", log)
        done = json.loads((out / "clip_done.json").read_text())
        write_json_atomic(out / "clip_done.json", {**done, "heldout": acc, "style_factors": factors})
    if resume and (out / "vae_done.json").exists():
        vae = AutoencoderKL.from_pretrained(out / "vae", torch_dtype=torch.float32).eval()
    else:
        vae = train_vae(cfg, out, images, log).eval()
    for p in list(te.parameters()) + list(vae.parameters()):
        p.requires_grad_(False)

    t_states = time.time()
    with torch.no_grad():
        latents = torch.cat([vae.encode(images[i : i + 1024]).latent_dist.mean for i in range(0, len(images), 1024)])
        # local only (~1.8 GB, minutes to redo), tied to this text encoder's weights file
        te_file = next((out / "text_encoder").glob("*.safetensors"))
        emb_cache = out / f"caption-states-{cfg.seed}-{cfg.n_images}-{te_file.stat().st_mtime_ns}.npy"
        if emb_cache.exists():
            emb = torch.from_numpy(np.load(emb_cache))
        else:
            emb = encode_texts(te, ids).half().view(len(scenes), cfg.captions_per_image, cfg.max_length, -1)
            np.save(emb_cache, emb.numpy())
        empty = encode_texts(te, tokenize(tok, [""]))[0]
        x0 = vae.encode(ho_images).latent_dist.mean
        right = encode_texts(te, tokenize(tok, ho_texts))
    _log(f"[data] latents mean {latents.mean().item():.3f} std {latents.std().item():.3f}; caption states "
         f"{tuple(emb.shape)} ({time.time() - t_all:.0f}s)", log)
    if not (out / "data_done.json").exists():  # the first run's data time (the model card's stage times)
        t_states = time.time() - t_states
        write_json_atomic(out / "data_done.json", {"seconds": t_render + t_states, "render_captions": t_render,
                                                   "latents_states": t_states})
    del images
    g = torch.Generator().manual_seed(12345)
    perm = torch.roll(torch.arange(len(x0)), 1)  # another scene's caption
    gap_batch = {"x0": x0, "t": torch.randint(50, 950, (len(x0),), generator=g),
                 "noise": torch.randn(x0.shape, generator=g), "right": right, "shuffled": right[perm],
                 "empty": empty[None].expand(len(x0), -1, -1).contiguous()}
    ema = train_unet(cfg, out, latents.half(), emb, empty, gap_batch, resume=resume, log=log, stop_at=stop_at)
    if stop_at is not None and stop_at < cfg.unet_steps:
        return out
    dest = export_pipeline(cfg, out, out / "pipeline", ema=ema)
    _log(f"[done] pipeline at {dest} ({time.time() - t_all:.0f}s this run)", log)
    return dest


def sample_grid(pipe, prompts: list[str], seed: int = 0, steps: int = 25, guidance: float = 5.0) -> np.ndarray:
    """Generate one 32x32 image per prompt (uint8 (n, 32, 32, 3))."""
    gen = torch.Generator().manual_seed(seed)
    out = pipe(prompts, height=32, width=32, num_inference_steps=steps, guidance_scale=guidance, generator=gen,
               output_type="np").images
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


__all__ = ["CanvasTrainConfig", "beta_schedule", "export_pipeline", "make_unet", "make_vae", "render", "run_training"]


# ----------------------------------------------------------------------------------------------- resume points

_RESUME_FILES = ("config.json", "data_done.json", "clip_done.json", "vae_done.json", "unet_log.jsonl")


def snapshot(out: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """A small resume point of a run (< 40 MB, fit to commit): the finished text encoder and VAE, and the UNet
    and its EMA at the last checkpoint, all float16; the optimizer state is left out (a resumed run warms its
    learning rate up again while Adam re-estimates its moments)."""
    import shutil

    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    out, dest = Path(out), Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "unet_ckpt").mkdir(parents=True)
    for name in _RESUME_FILES:
        if (out / name).exists():
            shutil.copy2(out / name, tmp / name)
    if (out / "text_encoder").is_dir():
        CLIPTextModel.from_pretrained(out / "text_encoder").half().save_pretrained(tmp / "text_encoder")
    if (out / "vae").is_dir():
        AutoencoderKL.from_pretrained(out / "vae").half().save_pretrained(tmp / "vae")
    ckpt = out / "unet_ckpt"
    if (ckpt / "state.json").exists():
        for name in ("unet.safetensors", "ema.safetensors"):
            save_tensors(tmp / "unet_ckpt" / name, {k: v.half() for k, v in load_file(str(ckpt / name)).items()})
        shutil.copy2(ckpt / "state.json", tmp / "unet_ckpt" / "state.json")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def restore(src: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copy a resume point written by :func:`snapshot` into a run directory (then run with ``resume=True``)."""
    import shutil

    src, out = Path(src), Path(out)
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"{src} holds no canvas resume point (no config.json)")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, out, dirs_exist_ok=True)
    return out
