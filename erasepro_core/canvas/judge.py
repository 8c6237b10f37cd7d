"""The canvas judge: a CNN that reads a 32x32 scene back -- which objects are present and in which colour,
the style's three factors (hence the artist), and which character (if any).

Trained on fresh renders with light augmentation (gain, tint, blur, noise) so it also reads generated images;
weights ship as safetensors in ``erasepro_core/canvas/judge/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from erasepro_core.bundled import CANVAS_JUDGE_DIR
from erasepro_core.canvas.world import (
    ARTISTS,
    BACKGROUNDS,
    CHARACTERS,
    COLOURS,
    N_LABELS,
    OBJECTS,
    RESOLUTION,
    STROKES,
    TEXTURES,
    render_dataset,
    scene_labels,
    style_id_of,
)
from erasepro_core.judges.cnn import conv_block, fit_heads, load_weights, saved_width

JUDGE_DIR = CANVAS_JUDGE_DIR
#: (name, number of classes) of each head, in label-column order (see ``world.scene_labels``).
HEADS: tuple[tuple[str, int], ...] = (
    *((f"obj:{o}", len(COLOURS) + 1) for o in OBJECTS),
    ("background", len(BACKGROUNDS)), ("stroke", len(STROKES)), ("texture", len(TEXTURES)),
    ("character", len(CHARACTERS) + 1),
)
assert len(HEADS) == N_LABELS


class CanvasJudgeNet(torch.nn.Module):
    """conv 48-48 / pool / 96-96 / pool / 192-192 / pool -> 384 -> one linear head per label column."""

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        w, block = width, conv_block
        self.features = torch.nn.Sequential(
            block(3, w), block(w, w), torch.nn.MaxPool2d(2),
            block(w, 2 * w), block(2 * w, 2 * w), torch.nn.MaxPool2d(2),
            block(2 * w, 4 * w), block(4 * w, 4 * w), torch.nn.MaxPool2d(2),
        )
        self.fc = torch.nn.Sequential(torch.nn.Linear(4 * w * 16, 384), torch.nn.ReLU())
        self.sizes = tuple(n for _, n in HEADS)
        self.head = torch.nn.Linear(384, sum(self.sizes))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, 32, 32) in [0, 1] -> logits per head."""
        return list(self.head(self.fc(self.features(x).flatten(1))).split(self.sizes, -1))


def to_tensor(images: Any) -> torch.Tensor:
    """PIL images / uint8 arrays (H, W, 3) / a uint8 batch (B, H, W, 3) / float (B, 3, H, W) in [0, 1] ->
    float (B, 3, 32, 32) in [0, 1]."""
    from PIL import Image

    if torch.is_tensor(images):
        x = images.float()
    else:
        if isinstance(images, np.ndarray) and images.ndim == 4:
            x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        else:
            arrs = [images] if isinstance(images, (Image.Image, np.ndarray)) else list(images)
            out = [np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im, dtype=np.uint8) for im in arrs]
            x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != RESOLUTION:
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="area")
    return x


class CanvasJudge:
    """Reads scenes off images."""

    def __init__(self, net: CanvasJudgeNet) -> None:
        self.net = net.eval()

    @torch.no_grad()
    def predict_labels(self, images: Any, batch: int = 512) -> np.ndarray:
        """Label columns as in ``world.scene_labels`` (n, N_LABELS)."""
        x = to_tensor(images)
        cols = []
        for i in range(0, len(x), batch):
            cols.append(torch.stack([h.argmax(-1) for h in self.net(x[i : i + batch])], 1))
        return torch.cat(cols).numpy() if cols else np.zeros((0, N_LABELS), np.int64)

    def classify(self, images: Any) -> list[dict[str, Any]]:
        """One dict per image: ``objects`` {kind: colour}, ``background``, ``stroke``, ``texture``, ``style``
        (an artist's name, ``"default"``, or ``None`` for a combination no artist has), ``style_id`` and
        ``character`` (a name or ``None``)."""
        return [describe_labels(row) for row in self.predict_labels(images)]

    __call__ = classify


def describe_labels(row: np.ndarray) -> dict[str, Any]:
    """A label row as a readable dict."""
    n = len(OBJECTS)
    objects = {OBJECTS[i]: COLOURS[int(row[i]) - 1] for i in range(n) if row[i] > 0}
    sid = style_id_of(int(row[n]), int(row[n + 1]), int(row[n + 2]))
    style = "default" if sid == 0 else (ARTISTS[sid - 1] if sid > 0 else None)
    ch = int(row[n + 3])
    return {"objects": objects, "background": BACKGROUNDS[int(row[n])], "stroke": STROKES[int(row[n + 1])],
            "texture": TEXTURES[int(row[n + 2])], "style": style, "style_id": sid,
            "character": CHARACTERS[ch - 1] if ch else None}


def style_ids(labels: np.ndarray) -> np.ndarray:
    """Style id per label row (0 default, 1..64 artists, -1 other)."""
    n = len(OBJECTS)
    return np.array([style_id_of(int(r[n]), int(r[n + 1]), int(r[n + 2])) for r in labels], dtype=np.int64)


def load_judge(path: str | Path | None = None) -> CanvasJudge:
    """The shipped canvas judge (or one saved by :func:`train_judge` in ``path``)."""
    d = Path(path) if path is not None else JUDGE_DIR
    return CanvasJudge(load_weights(CanvasJudgeNet(width=saved_width(d)), d))


def judge_available(path: str | Path | None = None) -> bool:
    d = Path(path) if path is not None else JUDGE_DIR
    return (d / "judge.safetensors").is_file()


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Light augmentation: brightness/colour gain, a random blur, noise, a sub-pixel shift."""
    b = len(x)
    gain = 1 + (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.2
    x = x * gain * (1 + (torch.rand(b, 3, 1, 1, generator=g) - 0.5) * 0.1)
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    k = torch.rand(b, 1, 1, 1, generator=g) * 0.35
    x = (1 - k) * x + k * blur
    x = x + torch.randn(x.shape, generator=g) * (torch.rand(b, 1, 1, 1, generator=g) * 0.04)
    return x.clamp(0, 1)


def evaluate_renders(judge: CanvasJudge, n: int = 2000, seed: int = 1234, vae_dir: str | Path | None = None
                     ) -> dict[str, float]:
    """Accuracy per head group on fresh renders (or their VAE round trip): objects (all presence+colour columns
    right), style, character."""
    imgs, scenes = render_dataset(n, seed=seed, artist=True)
    if vae_dir is not None:
        imgs = vae_round_trip(imgs, vae_dir)
    labels = np.stack([scene_labels(s) for s in scenes])
    pred = judge.predict_labels(imgs)
    k = len(OBJECTS)
    return {
        "n": n,
        "objects": float((pred[:, :k] == labels[:, :k]).all(1).mean()),
        "object_columns": float((pred[:, :k] == labels[:, :k]).mean()),
        "style": float((style_ids(pred) == style_ids(labels)).mean()),
        "character": float((pred[:, k + 3] == labels[:, k + 3]).mean()),
        "all": float((pred == labels).all(1).mean()),
    }


@torch.no_grad()
def vae_round_trip(images: np.ndarray, vae_dir: str | Path, batch: int = 512) -> np.ndarray:
    """Renders encoded and decoded by a VAE (uint8 in, uint8 out): what a latent model's decoder makes of them."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(vae_dir), torch_dtype=torch.float32).eval()
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).permute(0, 3, 1, 2).float() / 127.5 - 1
        r = vae.decode(vae.encode(x).latent_dist.mean).sample
        out.append(((r.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def train_judge(out: str | Path = JUDGE_DIR, *, n_images: int = 40_000, steps: int = 2500, batch: int = 128,
                lr: float = 2e-3, width: int = 48, seed: int = 0, vae_dir: str | Path | None = None,
                init: str | Path | None = None, data_seed: int | None = None,
                log: Callable[[str], None] | None = print) -> dict[str, float]:
    """Train and save the judge; returns its accuracy on 2,000 fresh renders.

    With ``vae_dir``, half of the training renders are replaced by their round trip through that VAE, so the
    judge reads a latent model's decoded images as it reads renders (labels are unchanged: the round trip keeps
    the scene). ``init`` continues from a saved judge (a second round on fresh renders, ``data_seed``)."""
    torch.manual_seed(seed)
    log = log or (lambda _m: None)
    t0 = time.time()
    imgs, scenes = render_dataset(n_images, seed=seed + 50 if data_seed is None else data_seed)
    if vae_dir is not None:
        half = n_images // 2
        imgs[half:] = vae_round_trip(imgs[half:], vae_dir)
        log(f"[judge] {n_images - half} renders replaced by their VAE round trip ({time.time() - t0:.0f}s)")
    x_all = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    y_all = torch.from_numpy(np.stack([scene_labels(s) for s in scenes]))
    log(f"[judge] {n_images} renders ({time.time() - t0:.0f}s)")
    net = CanvasJudgeNet(width)
    if init is not None:
        net.load_state_dict(load_judge(init).net.state_dict())
    g = torch.Generator().manual_seed(seed)
    fit_heads(net, lambda idx: augment(x_all[idx].float() / 255.0, g), y_all, steps=steps, batch=batch, lr=lr,
              g=g, log=log, log_every=250)
    net.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
               for k, v in net.state_dict().items()}, str(out / "judge.safetensors"))
    conf: dict[str, Any] = {"width": width, "seed": seed, "steps": steps, "batch": batch, "n_images": n_images,
                            "vae_round_trip": vae_dir is not None, "data_seed": data_seed,
                            "init": json.loads((Path(init) / "config.json").read_text()) if init else None}
    (out / "config.json").write_text(json.dumps(conf, indent=2) + "\n")
    acc = evaluate_renders(load_judge(out))
    conf.update(fresh_render_accuracy=acc, seconds=round(time.time() - t0))
    if vae_dir is not None:
        conf["vae_round_trip_accuracy"] = evaluate_renders(load_judge(out), vae_dir=vae_dir)
    (out / "config.json").write_text(json.dumps(conf, indent=2) + "\n")
    log(f"[judge] fresh renders: {acc}")
    return acc
