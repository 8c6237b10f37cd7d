"""The CLIP judge: zero-shot target-vs-anchor from a CLIP model folder you point to (no download, ever).

P(target | image) = softmax over the image's cosine logits against "a picture of {target}" and "a picture of
{anchor}" (or "a picture" for the empty anchor); an image is flagged when P(target) ≥ ``threshold``. The folder is
``clip_model=`` (library, CLI, benchmarks) or the ``ERASEPRO_CLIP_MODEL`` environment variable (the service):
a transformers ``CLIPModel`` saved as safetensors with its tokenizer and image processor (for instance
``openai/clip-vit-large-patch14`` downloaded once with ``huggingface-cli download``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from erasepro_core.judges.base import JudgeUnavailable, Verdict

ENV = "ERASEPRO_CLIP_MODEL"
PHRASE = "a picture of {}"
DEFAULT_THRESHOLD = 0.5


def model_dir(clip_model: str | os.PathLike | None = None) -> Path:
    """The CLIP folder (argument, else ``ERASEPRO_CLIP_MODEL``); :class:`JudgeUnavailable` saying what to set."""
    given = clip_model or os.environ.get(ENV)
    if not given:
        raise JudgeUnavailable(f"the CLIP judge needs a CLIP model folder: set {ENV} (or pass clip_model) to a "
                               "local transformers CLIPModel folder; nothing is downloaded")
    path = Path(given).expanduser()
    if not (path / "config.json").is_file():
        raise JudgeUnavailable(f"the CLIP judge's folder {str(path)!r} has no config.json: point {ENV} (or "
                               "clip_model) at a local transformers CLIPModel folder")
    if not any(path.glob("*.safetensors")):
        raise JudgeUnavailable(f"the CLIP judge's folder {str(path)!r} has no .safetensors weights (only "
                               "safetensors are loaded)")
    return path


def problem(clip_model: str | os.PathLike | None = None, **_: Any) -> str | None:
    """Why the judge cannot run here, or None (nothing is loaded)."""
    try:
        model_dir(clip_model)
    except JudgeUnavailable as exc:
        return str(exc)
    return None


class CLIPJudge:
    """Zero-shot CLIP: flags an image when P(target) ≥ ``threshold`` against the anchor."""

    name = "clip"

    def __init__(self, clip_model: str | os.PathLike | None = None, threshold: float = DEFAULT_THRESHOLD) -> None:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        self.path = model_dir(clip_model)
        self.model = CLIPModel.from_pretrained(self.path, local_files_only=True, use_safetensors=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.processor = CLIPImageProcessor.from_pretrained(self.path, local_files_only=True)
        self.threshold = float(threshold)

    def p_target(self, images: Sequence[Image.Image], target: str, anchor: str) -> list[float]:
        """P(target | image) against the anchor, per image."""
        import torch

        texts = [PHRASE.format(target), PHRASE.format(anchor) if anchor else "a picture"]
        with torch.no_grad():
            tok = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            pix = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
            out = self.model(input_ids=tok["input_ids"], attention_mask=tok.get("attention_mask"),
                             pixel_values=pix["pixel_values"])
            return out.logits_per_image.softmax(-1)[:, 0].tolist()

    def verdicts(self, images: Sequence[Image.Image], target: str, anchor: str) -> list[Verdict]:
        return [Verdict(p >= self.threshold, p, ("target",) if p >= self.threshold else ("anchor",))
                for p in self.p_target(images, target, anchor)]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.path.name, "threshold": self.threshold,
                "phrase": PHRASE}
