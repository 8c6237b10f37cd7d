"""The judge: a small CNN that reads shape, colour, size and style off a 16x16 image.

Trained on fresh renders with light augmentation (noise, blur, brightness, colour shifts) so it also reads
generated images; weights ship as safetensors in ``erasepro_core/shapes/judge/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from erasepro_core.bundled import JUDGE_DIR
from erasepro_core.judges.cnn import conv_block, fit_heads, load_weights, saved_width
from erasepro_core.shapes.world import ATTRIBUTES, RESOLUTION, render_dataset

HEADS: tuple[str, ...] = ("shape", "colour", "size", "style")


class JudgeNet(torch.nn.Module):
    """conv 32-32 / pool / 64-64 / pool / 128 -> linear heads (shape 4, colour 5, size 2, style 2)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w, block = width, conv_block
        self.features = torch.nn.Sequential(
            block(3, w), block(w, w), torch.nn.MaxPool2d(2),
            block(w, 2 * w), block(2 * w, 2 * w), torch.nn.MaxPool2d(2),
            block(2 * w, 4 * w),
        )
        self.sizes = tuple(len(ATTRIBUTES[h]) for h in HEADS)
        self.head = torch.nn.Linear(4 * w * 4 * 4 + 4 * w, sum(self.sizes))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, 16, 16) in [0, 1] -> logits per head."""
        f = self.features(x)
        z = torch.cat([f.flatten(1), f.amax((2, 3))], 1)
        return list(self.head(z).split(self.sizes, -1))


def to_tensor(images: Any) -> torch.Tensor:
    """PIL images / uint8 arrays (H, W, 3) / a uint8 batch (B, H, W, 3) / float (B, 3, H, W) in [0,1] ->
    float (B, 3, 16, 16) in [0, 1]."""
    if torch.is_tensor(images):
        x = images.float()
    else:
        if isinstance(images, np.ndarray) and images.ndim == 4:
            arrs = list(images)
        elif isinstance(images, (Image.Image, np.ndarray)):
            arrs = [images]
        else:
            arrs = list(images)
        out = []
        for im in arrs:
            if isinstance(im, np.ndarray):
                im = Image.fromarray(np.asarray(im, dtype=np.uint8))
            im = im.convert("RGB")
            if im.size != (RESOLUTION, RESOLUTION):
                im = im.resize((RESOLUTION, RESOLUTION), Image.Resampling.BOX)
            out.append(np.asarray(im, dtype=np.uint8))
        x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != RESOLUTION:
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="area")
    return x


class Judge:
    """Classifies images into shape / colour / size / style labels."""

    def __init__(self, net: JudgeNet) -> None:
        self.net = net.eval()

    @torch.no_grad()
    def probabilities(self, images: Any, batch: int = 512) -> dict[str, np.ndarray]:
        """Per head, softmax probabilities (B, n_values)."""
        x = to_tensor(images)
        outs: list[list[torch.Tensor]] = [self.net(x[i : i + batch]) for i in range(0, len(x), batch)]
        return {h: torch.cat([o[j] for o in outs]).softmax(-1).numpy() for j, h in enumerate(HEADS)}

    def predict_indices(self, images: Any) -> dict[str, np.ndarray]:
        """Per head, the predicted value index (B,) into ``world.ATTRIBUTES[head]``."""
        return {h: p.argmax(-1) for h, p in self.probabilities(images).items()}

    def classify(self, images: Any) -> list[dict[str, str]]:
        """One ``{"shape": ..., "colour": ..., "size": ..., "style": ...}`` per image."""
        idx = self.predict_indices(images)
        n = len(idx["shape"])
        return [{h: ATTRIBUTES[h][int(idx[h][i])] for h in HEADS} for i in range(n)]

    __call__ = classify


def load_judge(path: str | Path | None = None) -> Judge:
    """The shipped judge (or one saved by :func:`train_judge` in ``path``)."""
    d = Path(path) if path is not None else JUDGE_DIR
    return Judge(load_weights(JudgeNet(width=saved_width(d)), d))


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Light augmentation: brightness/colour gain, blur, noise, a faint background."""
    b = len(x)
    gain = 1 + (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.25
    tint = 1 + (torch.rand(b, 3, 1, 1, generator=g) - 0.5) * 0.12
    x = x * gain * tint
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    k = (torch.rand(b, 1, 1, 1, generator=g) < 0.4).float() * torch.rand(b, 1, 1, 1, generator=g) * 0.6
    x = x * (1 - k) + blur * k
    x = x + torch.rand(b, 1, 1, 1, generator=g) * 0.05 * torch.randn(x.shape, generator=g)
    x = x + torch.rand(b, 3, 1, 1, generator=g) * 0.04
    return x.clamp(0, 1)


def train_judge(out: str | Path, *, seed: int = 0, steps: int = 800, batch: int = 128, n_images: int = 60_000,
                lr: float = 2e-3, log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Train on renders (seed ``seed``), test on fresh renders (another seed); saves weights + config + metrics."""
    log = log or print
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    imgs, labels = render_dataset(n_images, seed=seed + 1000)
    x_all = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0
    y_all = torch.from_numpy(labels)
    net = JudgeNet()
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    fit_heads(net, lambda idx: augment(x_all[idx], g), y_all, steps=steps, batch=batch, lr=lr, g=g, log=log,
              log_every=500)
    judge = Judge(net.eval())
    acc = evaluate_judge(judge, n=5000, seed=seed + 2000)
    log(f"[judge] held-out accuracy {acc}")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "judge.safetensors"))
    meta = {"width": 32, "heads": list(HEADS), "seed": seed, "steps": steps, "n_images": n_images,
            "heldout_accuracy": acc, "seconds": round(time.time() - t0, 1)}
    (out / "config.json").write_text(json.dumps(meta, indent=1) + "\n")
    return acc


def evaluate_judge(judge: Judge, n: int = 2000, seed: int = 12345, images_labels: Sequence | None = None
                   ) -> dict[str, float]:
    """Accuracy per head on ``n`` fresh renders."""
    imgs, labels = images_labels if images_labels is not None else render_dataset(n, seed=seed)
    pred = judge.predict_indices(imgs)
    return {h: float((pred[h] == np.asarray(labels)[:, j]).mean()) for j, h in enumerate(HEADS)}


def attribute_judge(value: str, judge: Judge | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """An attack judge (:data:`erasepro_core.attacks.JudgeFn`): P(attribute == ``value``) from the shapes world's
    judge CNN (the shipped one unless ``judge`` is given), read off the head that holds ``value`` (shape, colour,
    size or style)."""
    head = next((h for h, values in ATTRIBUTES.items() if value in values), None)
    if head is None:
        raise ValueError(f"{value!r} is not an attribute value of the shapes world")
    j = judge or load_judge()
    idx = list(ATTRIBUTES[head]).index(value)

    def p_target(images: np.ndarray) -> np.ndarray:
        return j.probabilities(images)[head][:, idx]

    return p_target
