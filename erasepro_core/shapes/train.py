"""Train the shapes-world text-to-image model from a seed, in resumable stages.

Stages (each writes into ``out`` and is skipped when already done):

1. ``text``  -- a CLIPTextModel trained *alone* to predict the caption's attributes from every position from
   the first EOS on and from the mean of all states; then frozen.
2. ``vae``   -- an AutoencoderKL 16x16x3 -> 8x8x4; the latents' per-channel mean/std are folded into
   ``quant_conv``/``post_quant_conv`` so latents are N(0, 1) with ``scaling_factor=1``.
3. ``unet``  -- a UNet2DConditionModel on precomputed latents and precomputed caption embeddings:
   eps-prediction, min-SNR-5 weighting, 10% empty captions, AdamW (2x on cross-attention), EMA;
   checkpoints (safetensors) every ``ckpt_every`` steps; ``--resume`` continues from the last one.
   ``unet_log.jsonl`` records the training loss and, on a fixed held-out batch, the loss with the right,
   a shuffled and an empty caption (the conditional-vs-shuffled gap is the health signal).
4. ``export`` -- the EMA UNet is assembled into a float16 ``StableDiffusionPipeline`` in ``out/pipeline``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from erasepro_core.delta import save_tensors
from erasepro_core.io import write_json_atomic
from erasepro_core.shapes.captions import HELDOUT_TEMPLATES, TRAIN_TEMPLATES, caption
from erasepro_core.shapes.config import TrainConfig
from erasepro_core.shapes.world import SIZES, all_attributes, labels_to_attributes, render_dataset


def beta_schedule() -> dict:
    """The noise schedule shared by training and the shipped DDIM scheduler."""
    return {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}


# ----------------------------------------------------------------------------------------------- models


def make_text_encoder(cfg: TrainConfig):
    """A randomly initialised CLIPTextModel over the real CLIP vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=cfg.text_hidden, intermediate_size=4 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_length, hidden_act="quick_gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    return CLIPTextModel(config)


def make_vae():
    """AutoencoderKL (32, 64): 16x16x3 <-> 8x8x4."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=32, sample_size=16, scaling_factor=1.0,
    )


def make_unet(cfg: TrainConfig):
    """UNet (32, 64) on 8x8x4 latents with cross-attention at every level."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cfg.text_hidden, attention_head_dim=(2, 4), norm_num_groups=16,
    )


def make_scheduler():
    """The shipped DDIM scheduler (same betas as training)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**beta_schedule(), clip_sample=False, set_alpha_to_one=False, steps_offset=1)


# ----------------------------------------------------------------------------------------------- helpers


def _log(msg: str, log: Callable[[str], None] | None) -> None:
    (log or print)(msg)


def _images_to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def caption_pool(cfg: TrainConfig, templates: tuple[str, ...] = TRAIN_TEMPLATES, per_combo: int | None = None,
                 seed_offset: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Captions for every attribute combination: texts, combo index (n,), labels (n, 4).

    Label columns: shape, colour, size (2 = not mentioned), style.
    """
    rng = np.random.default_rng([cfg.seed, 17, seed_offset])
    texts, combos, labels = [], [], []
    k = per_combo or cfg.captions_per_combo
    for ci, attrs in enumerate(all_attributes()):
        for _ in range(k):
            p = caption(attrs, rng, templates)
            texts.append(p.text)
            combos.append(ci)
            sh, co, si, st = attrs.index()
            labels.append((sh, co, si if p.size else len(SIZES), st))
    return texts, np.array(combos), np.array(labels)


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids padded to the tokenizer's max length, exactly as StableDiffusionPipeline does."""
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


@torch.no_grad()
def encode_texts(text_encoder, ids: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """last_hidden_state for token ids (no attention mask, as SD-1.x)."""
    out = [text_encoder(ids[i : i + batch])[0] for i in range(0, len(ids), batch)]
    return torch.cat(out)


class _AttrHeads(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.sizes = (4, 5, 3, 2)
        self.lin = torch.nn.Linear(hidden, sum(self.sizes))

    def loss_acc(self, states: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor, eos: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        first = (ids == eos).int().argmax(1)
        pos = torch.arange(ids.shape[1])[None]
        mask = (pos >= first[:, None]).float()  # (B, L)
        feats = torch.cat([states, states.mean(1, keepdim=True)], 1)  # (B, L+1, H)
        mask = torch.cat([mask, torch.ones(len(ids), 1)], 1)
        logits = self.lin(feats).split(self.sizes, -1)
        loss = torch.zeros(())
        correct = []
        for j, lg in enumerate(logits):
            y = labels[:, j, None].expand(-1, lg.shape[1])
            ce = F.cross_entropy(lg.flatten(0, 1), y.flatten(), reduction="none").view_as(mask)
            loss = loss + (ce * mask).sum() / mask.sum()
            at_eos = lg.gather(1, first[:, None, None].expand(-1, 1, lg.shape[2])).squeeze(1)
            correct.append(at_eos.argmax(-1) == labels[:, j])
        return loss, torch.stack(correct, 1).float().mean(0)


# ----------------------------------------------------------------------------------------------- stages


def train_text_encoder(cfg: TrainConfig, out: Path, log: Callable[[str], None] | None = None):
    """Stage 1: the text encoder alone, on the attribute-prediction objective; saved to ``out/text_encoder``."""
    from erasepro_core.tokenizer import clip_tokenizer

    torch.manual_seed(cfg.seed)
    tok = clip_tokenizer(cfg.max_length)
    texts, _, labels = caption_pool(cfg)
    ids, labels_t = tokenize(tok, texts), torch.from_numpy(labels)
    ho_texts, _, ho_labels = caption_pool(cfg, HELDOUT_TEMPLATES, per_combo=10, seed_offset=1)
    ho_ids, ho_labels_t = tokenize(tok, ho_texts), torch.from_numpy(ho_labels)
    te = make_text_encoder(cfg)
    heads = _AttrHeads(cfg.text_hidden)
    params = list(te.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.text_lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()
    te.train()
    for step in range(cfg.text_steps):
        lr = cfg.text_lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / cfg.text_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(ids), (cfg.text_batch,), generator=g)
        loss, acc = heads.loss_acc(te(ids[idx])[0], ids[idx], labels_t[idx], tok.eos_token_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == cfg.text_steps - 1:
            _log(f"[text] step {step} loss {loss.item():.4f} acc {acc.tolist()} ({time.time() - t0:.0f}s)", log)
    te.eval()
    with torch.no_grad():
        _, ho_acc = heads.loss_acc(encode_texts(te, ho_ids), ho_ids, ho_labels_t, tok.eos_token_id)
    _log(f"[text] held-out-phrasing accuracy shape/colour/size/style {ho_acc.tolist()}", log)
    te.save_pretrained(out / "text_encoder", safe_serialization=True)
    write_json_atomic(out / "text_done.json", {"seconds": time.time() - t0, "heldout_acc": ho_acc.tolist()})
    return te


def train_vae(cfg: TrainConfig, out: Path, images: torch.Tensor, log: Callable[[str], None] | None = None):
    """Stage 2: the VAE; the latents' channel mean/std folded into quant convs; saved to ``out/vae``."""
    torch.manual_seed(cfg.seed + 1)
    vae = make_vae()
    t0 = time.time()
    mean, std = fit_vae(cfg, vae, images, chunk=2048, log=log)
    with torch.no_grad():
        z = vae.encode(images[:2048]).latent_dist.mean
        rec = vae.decode(z).sample
        _log(f"[vae] folded mean {mean.tolist()} std {std.tolist()}; now mean {z.mean().item():.3f} "
             f"std {z.std().item():.3f}; recon mse {F.mse_loss(rec, images[:2048]).item():.5f}", log)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    write_json_atomic(out / "vae_done.json", {"seconds": time.time() - t0, "mean": mean.tolist(), "std": std.tolist()})
    return vae


def fit_vae(cfg: Any, vae: Any, images: torch.Tensor, *, l1_weight: float = 0.0, chunk: int = 2048,
            timer: StepTimer | None = None, log: Callable[[str], None] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE stage both worlds train with: ``cfg.vae_steps`` AdamW steps (learning rate ``cfg.vae_lr``, linear
    warm-up over 50 steps, then cosine) on  ‖x̂ − x‖² + ``l1_weight``·|x̂ − x| + ``cfg.vae_kl``·KL  for batches of
    ``cfg.vae_batch`` images (seed ``cfg.seed + 1``); then the channel mean and std of the first 8192 images'
    latent means (encoded ``chunk`` at a time) are folded into the quant convs (:func:`fold_latent_stats`).
    Leaves ``vae`` in eval mode; returns (mean, std)."""
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    t0 = time.time()
    vae.train()
    for step in range(cfg.vae_steps):
        if timer is not None:
            timer.before(step)
        lr = cfg.vae_lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / cfg.vae_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        x = images[torch.randint(len(images), (cfg.vae_batch,), generator=g)]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        mse = F.mse_loss(rec, x)
        if l1_weight:
            loss = mse + F.l1_loss(rec, x) * l1_weight + cfg.vae_kl * post.kl().mean()
        else:
            loss = mse + cfg.vae_kl * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if timer is not None:
            timer.after(step)
        if step % 100 == 0 or step == cfg.vae_steps - 1:
            _log(f"[vae] step {step} mse {mse.item():.5f} ({time.time() - t0:.0f}s)", log)
    vae.eval()
    with torch.no_grad():
        n_stat = min(8192, len(images))
        mu = torch.cat([vae.encode(images[i : i + chunk]).latent_dist.mean for i in range(0, n_stat, chunk)])
        mean, std = mu.mean((0, 2, 3)), mu.std((0, 2, 3))
        fold_latent_stats(vae, mean, std)
    return mean, std


@torch.no_grad()
def fold_latent_stats(vae, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make the encoder emit (z - mean) / std and the decoder accept it, so ``scaling_factor=1``."""
    c = len(mean)
    q = vae.quant_conv  # 1x1 conv: 2c -> 2c (mean, logvar)
    q.weight[:c] /= std[:, None, None, None]
    q.bias[:c] = (q.bias[:c] - mean) / std
    q.bias[c:] -= 2 * torch.log(std)
    p = vae.post_quant_conv  # z = std * z' + mean
    p.bias += (p.weight[:, :, 0, 0] @ mean)
    p.weight *= std[None, :, None, None]


def _ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ema[k].mul_(decay).add_(v, alpha=1 - decay)
            else:
                ema[k].copy_(v)


def _optimizer_state(opt: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    out = {}
    for p, st in opt.state.items():
        for key, val in st.items():
            out[f"{key}.{names[id(p)]}"] = val if torch.is_tensor(val) else torch.tensor(val)
    return out


def _load_optimizer_state(opt: torch.optim.Optimizer, names: dict[int, str], tensors: dict[str, torch.Tensor]
                          ) -> None:
    for group in opt.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            st = {k.split(".", 1)[0]: v for k, v in tensors.items() if k.split(".", 1)[1] == name}
            if st:
                opt.state[p] = st


def train_unet(cfg: TrainConfig, out: Path, latents: torch.Tensor, combo: torch.Tensor, emb: torch.Tensor,
               empty: torch.Tensor, gap_batch: dict[str, torch.Tensor], resume: bool = True,
               log: Callable[[str], None] | None = None, stop_at: int | None = None) -> dict[str, torch.Tensor]:
    """Stage 3. ``emb``: (n_combos, k, L, H) caption embeddings per combination. Returns the EMA state."""
    torch.manual_seed(cfg.seed + 2)
    return fit_unet(cfg, out, make_unet(cfg), latents, emb, empty, gap_batch, rows=combo, resume=resume, log=log,
                    stop_at=stop_at)


class StepTimer(Protocol):
    """Called around each training step (e.g. the canvas world's thread tuner); ``current``: what it logs."""

    current: int

    def before(self, step: int) -> None: ...

    def after(self, step: int) -> None: ...


def fit_unet(cfg: Any, out: Path, unet: torch.nn.Module, latents: torch.Tensor, emb: torch.Tensor,
             empty: torch.Tensor, gap_batch: dict[str, torch.Tensor], *, rows: torch.Tensor | None = None,
             resume: bool = True, log: Callable[[str], None] | None = None, stop_at: int | None = None,
             cool_down: bool = False, timer: StepTimer | None = None) -> dict[str, torch.Tensor]:
    """The UNet stage both worlds train with; returns the EMA state (decay min(``cfg.ema``, (1+s)/(10+s))).

    Step s draws ``cfg.batch`` latents x0 (``latents[i]``), one of the k captions of each (``emb[rows[i]]``,
    ``rows`` None: ``emb[i]``), the empty caption with probability ``cfg.p_empty``, t ~ U{0..999} and noise ε;
    x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε on the linear β schedule (1e-4..0.02), and minimises the min-SNR-γ weighted
    ε-loss  mean_i w(t_i)‖ε̂ − ε‖²,  w(t) = min(SNR(t), γ)/SNR(t),  γ = ``cfg.min_snr``. AdamW, cross-attention
    at ``cfg.cross_attn_lr_mult`` × the learning rate, which warms up linearly over ``cfg.warmup`` steps (again
    after resuming from a snapshot, which has no Adam moments) and, with ``cool_down``, falls linearly to a
    tenth over the last 20 %. Every ``cfg.log_every`` steps a loss line, every ``cfg.gap_every`` the
    :func:`loss_gap`, every ``cfg.ckpt_every`` a checkpoint in ``out/unet_ckpt`` (resumed from with ``resume``)."""
    unet.train()
    names = {id(p): n for n, p in unet.named_parameters()}
    cross = [p for n, p in unet.named_parameters() if "attn2" in n]
    rest = [p for n, p in unet.named_parameters() if "attn2" not in n]
    opt = torch.optim.AdamW([{"params": rest, "lr_mult": 1.0},
                             {"params": cross, "lr_mult": cfg.cross_attn_lr_mult}], lr=cfg.lr, weight_decay=0.01)
    ckpt = out / "unet_ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    start, rewarm_from = 0, 0
    if resume and (ckpt / "state.json").exists():
        state = json.loads((ckpt / "state.json").read_text())
        unet.load_state_dict({k: v.float() for k, v in load_file(str(ckpt / "unet.safetensors")).items()})
        ema = {k: v.float() for k, v in load_file(str(ckpt / "ema.safetensors")).items()}
        start = state["step"]
        if (ckpt / "optim.safetensors").exists():
            _load_optimizer_state(opt, names, load_file(str(ckpt / "optim.safetensors")))
        else:  # from a snapshot: fresh Adam moments, so warm the learning rate up again
            rewarm_from = start
        _log(f"[unet] resumed at step {start}", log)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float()
    snr = abar / (1 - abar)
    weight = snr.clamp(max=cfg.min_snr) / snr
    n, k = len(latents), emb.shape[1]
    log_path = out / "unet_log.jsonl"
    t0, last = time.time(), time.time()
    end = cfg.unet_steps if stop_at is None else min(stop_at, cfg.unet_steps)
    running, count = 0.0, 0
    for step in range(start, end):
        if timer is not None:
            timer.before(step)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(n, (cfg.batch,), generator=g)
        x0 = latents[idx].float()
        cap = emb[idx if rows is None else rows[idx], torch.randint(k, (cfg.batch,), generator=g)].float()
        drop = torch.rand(cfg.batch, generator=g) < cfg.p_empty
        cap[drop] = empty.float()
        t = torch.randint(1000, (cfg.batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(xt, t, cap).sample
        loss = ((pred - noise).pow(2).mean((1, 2, 3)) * weight[t]).mean()
        lr = cfg.lr * min(1.0, (step + 1 - rewarm_from) / cfg.warmup)
        if cool_down and step > 0.8 * cfg.unet_steps:  # a short linear cool-down at the end
            lr *= max(0.1, (cfg.unet_steps - step) / (0.2 * cfg.unet_steps))
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_mult"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        _ema_update(ema, unet, min(cfg.ema, (1 + step) / (10 + step)))
        if timer is not None:
            timer.after(step)
        running += loss.item()
        count += 1
        done = step + 1
        record: dict[str, float] = {}
        if done % cfg.log_every == 0:
            now = time.time()
            record = {"step": done, "loss": running / count, "s_per_step": (now - last) / count,
                      "elapsed": now - t0, **({"threads": timer.current} if timer is not None else {})}
            running, count, last = 0.0, 0, now
        if done % cfg.gap_every == 0 or done == end:
            record.update({"step": done, **loss_gap(unet, gap_batch, abar)})
        if record:
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            _log("[unet] " + " ".join(f"{a}={b:.4g}" if isinstance(b, float) else f"{a}={b}"
                                      for a, b in record.items()), log)
        if done % cfg.ckpt_every == 0 or done == end:
            save_tensors(ckpt / "unet.safetensors", unet.state_dict())
            save_tensors(ckpt / "ema.safetensors", ema)
            save_tensors(ckpt / "optim.safetensors", _optimizer_state(opt, names))
            write_json_atomic(ckpt / "state.json", {"step": done, "config": asdict(cfg)})
    return ema


@torch.no_grad()
def loss_gap(unet, batch: dict[str, torch.Tensor], abar: torch.Tensor) -> dict[str, float]:
    """Held-out eps-MSE with the right, a shuffled (other combination) and an empty caption."""
    was = unet.training
    unet.eval()
    a = abar[batch["t"]].view(-1, 1, 1, 1)
    xt = a.sqrt() * batch["x0"] + (1 - a).sqrt() * batch["noise"]
    res = {}
    for name in ("right", "shuffled", "empty"):
        pred = unet(xt, batch["t"], batch[name]).sample
        res[f"loss_{name}"] = (pred - batch["noise"]).pow(2).mean().item()
    res["gap"] = res["loss_shuffled"] - res["loss_right"]
    unet.train(was)
    return res


def build_pipeline(text_encoder, vae, unet, max_length: int):
    """Assemble the standard StableDiffusionPipeline."""
    from diffusers import StableDiffusionPipeline

    from erasepro_core.tokenizer import clip_tokenizer

    return StableDiffusionPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(max_length),
        unet=unet.eval(), scheduler=make_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def export_pipeline(cfg: TrainConfig, out: Path, dest: Path, ema: dict[str, torch.Tensor] | None = None,
                    ckpt_file: str = "ema.safetensors") -> Path:
    """Write the float16 pipeline (EMA UNet) to ``dest``; loads with ``from_pretrained(dest)``."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    te = CLIPTextModel.from_pretrained(out / "text_encoder", torch_dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(out / "vae", torch_dtype=torch.float32)
    unet = make_unet(cfg)
    unet.load_state_dict(ema if ema is not None else load_file(str(out / "unet_ckpt" / ckpt_file)))
    pipe = build_pipeline(te, vae, unet, cfg.max_length).to(torch.float16)
    pipe.save_pretrained(dest, safe_serialization=True)
    ask_loaders_for_float32(dest)
    return Path(dest)


def ask_loaders_for_float32(dest: str | os.PathLike) -> None:
    """The weights are stored in float16; ask loaders for float32 so CPU inference works by default."""
    for sub in ("text_encoder", "unet", "vae"):
        path = Path(dest) / sub / "config.json"
        conf = json.loads(path.read_text())
        for key in ("torch_dtype", "dtype"):
            if key in conf:
                conf[key] = "float32"
        path.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------------------------- driver


def begin_run(cfg: Any, out: str | os.PathLike) -> Path:
    """Start (or resume) a training run in ``out``: torch's thread count from the recipe, the folder, and the
    recipe written as ``out/config.json``. Returns ``out``."""
    torch.set_num_threads(cfg.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", asdict(cfg))
    return out


def run_training(cfg: TrainConfig, out: str | os.PathLike, *, resume: bool = True, stop_at: int | None = None,
                 log: Callable[[str], None] | None = None) -> Path:
    """All stages; returns the exported pipeline directory ``out/pipeline``."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    from erasepro_core.tokenizer import clip_tokenizer

    out, t_all = begin_run(cfg, out), time.time()
    _log(f"[data] rendering {cfg.n_images} images", log)
    imgs_np, labels = render_dataset(cfg.n_images, seed=cfg.seed)
    images = _images_to_tensor(imgs_np)

    if resume and (out / "text_done.json").exists():
        te = CLIPTextModel.from_pretrained(out / "text_encoder", torch_dtype=torch.float32).eval()
    else:
        te = train_text_encoder(cfg, out, log).eval()
    if resume and (out / "vae_done.json").exists():
        vae = AutoencoderKL.from_pretrained(out / "vae", torch_dtype=torch.float32).eval()
    else:
        vae = train_vae(cfg, out, images, log).eval()
    for p in list(te.parameters()) + list(vae.parameters()):
        p.requires_grad_(False)

    tok = clip_tokenizer(cfg.max_length)
    with torch.no_grad():
        latents = torch.cat([vae.encode(images[i : i + 2048]).latent_dist.mean for i in range(0, len(images), 2048)])
        texts, combos, _ = caption_pool(cfg)
        k = cfg.captions_per_combo
        emb = encode_texts(te, tokenize(tok, texts)).half().view(len(all_attributes()), k, cfg.max_length, -1)
        empty = encode_texts(te, tokenize(tok, [""]))[0]
    _log(f"[data] latents mean {latents.mean().item():.3f} std {latents.std().item():.3f}; "
         f"{len(texts)} caption embeddings", log)
    combo_of_image = torch.tensor([all_attributes().index(labels_to_attributes(r)) for r in labels])

    # fixed held-out batch for the loss gap: fresh renders, held-out phrasings
    g = torch.Generator().manual_seed(12345)
    ho_imgs, ho_labels = render_dataset(256, seed=cfg.seed + 99)
    with torch.no_grad():
        x0 = vae.encode(_images_to_tensor(ho_imgs)).latent_dist.mean
        rng = np.random.default_rng(cfg.seed + 99)
        ho_attrs = [labels_to_attributes(r) for r in ho_labels]
        right = [caption(a, rng, HELDOUT_TEMPLATES).text for a in ho_attrs]
        perm = np.array([(i + 1 + rng.integers(len(ho_attrs) - 1)) % len(ho_attrs) for i in range(len(ho_attrs))])
        for i in range(len(perm)):  # make sure the shuffled caption names another shape or colour
            while ho_attrs[perm[i]].index()[:2] == ho_attrs[i].index()[:2]:
                perm[i] = rng.integers(len(ho_attrs))
        right_e = encode_texts(te, tokenize(tok, right))
    gap_batch = {
        "x0": x0, "t": torch.randint(50, 950, (len(x0),), generator=g),
        "noise": torch.randn(x0.shape, generator=g), "right": right_e, "shuffled": right_e[torch.from_numpy(perm)],
        "empty": empty[None].expand(len(x0), -1, -1).contiguous(),
    }
    ema = train_unet(cfg, out, latents, combo_of_image, emb, empty, gap_batch, resume=resume, log=log,
                     stop_at=stop_at)
    dest = export_pipeline(cfg, out, out / "pipeline", ema=ema)
    _log(f"[done] pipeline at {dest} ({time.time() - t_all:.0f}s this run)", log)
    return dest
