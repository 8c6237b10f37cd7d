"""File sizes of each checkpoint format for SD-1.4-sized and FLUX.1-sized edits at 1, 10 and 100 concepts.

How: the rank of an edit is the number of constrained columns (``n_constraints`` of a real erasure with the
default templates, measured here on the tiny SD pipeline: columns per concept) capped by the site's shape. For
every site of the real model's layout (SD-1.4: 32 cross-attention K/V maps 768 → 320/640/1280, and with the
progressive stage 12 CLIP fc2 maps 3072 → 768; FLUX.1: context_embedder 4096 → 3072 and the pooled
text_embedder 768 → 3072) random tensors of those shapes are written with safetensors under the keys each format
uses, and the files are measured on disk. The weights' values do not change a safetensors file's size.

    python benchmarks/lora_sizes.py            # prints the Markdown table of docs/formats.md
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from erasepro_core import ErasureSpec, erase
from erasepro_core.tiny import tiny_sd_pipeline

SD14_KV = [(320, 768)] * 4 + [(640, 768)] * 4 + [(1280, 768)] * 4 + [(1280, 768)] * 2 \
    + [(1280, 768)] * 6 + [(640, 768)] * 6 + [(320, 768)] * 6  # down 0-2 (2 each), mid, up 1-3 (3 each): K and V
SD14_FC2 = [(768, 3072)] * 12
FLUX = {"t5": (3072, 4096), "pooled": (3072, 768)}


def columns_per_concept() -> int:
    """Constrained columns per concept with the default templates (token policy ``last``)."""
    pipe = tiny_sd_pipeline(0)
    report = erase(pipe, ErasureSpec(edits=[{"target": "a cat", "anchor": "a dog"}])).report
    return int(report["n_constraints"])


def _size(tensors: dict[str, torch.Tensor]) -> int:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.safetensors"
        save_file(tensors, str(path))
        return path.stat().st_size


def sizes(shapes: list[tuple[int, int]], ranks: list[int], dtype: torch.dtype) -> dict[str, int]:
    dense = {f"s{i}.weight": torch.zeros(o, n, dtype=dtype) for i, (o, n) in enumerate(shapes)}
    lora, kohya = {}, {}
    for i, ((o, n), r) in enumerate(zip(shapes, ranks, strict=True)):
        lora[f"s{i}.lora_A.weight"], lora[f"s{i}.lora_B.weight"] = torch.zeros(r, n, dtype=dtype), torch.zeros(
            o, r, dtype=dtype)
        kohya[f"lora_s{i}.lora_down.weight"], kohya[f"lora_s{i}.lora_up.weight"] = lora[f"s{i}.lora_A.weight"], \
            lora[f"s{i}.lora_B.weight"]
        kohya[f"lora_s{i}.alpha"] = torch.tensor(float(r))
    return {"delta": _size(dense), "lora": _size(lora), "kohya": _size(kohya), "params": sum(o * n for o, n in shapes)}


def main() -> None:
    k = columns_per_concept()
    print(f"columns per concept (default templates): {k}\n")
    print("| model, schedule | concepts | rank | delta | LoRA (diffusers/PEFT) | LoRA (kohya) |")
    print("|---|---:|---:|---:|---:|---:|")
    mb = lambda b: f"{b / 2**20:.2f} MB"  # noqa: E731
    for c in (1, 10, 100):
        for name, shapes in (("SD-1.4 fp16, default (K/V)", SD14_KV), ("SD-1.4 fp16, progressive", SD14_KV + SD14_FC2)):
            ranks = [min(c * k, o, n) for o, n in shapes]
            s = sizes(shapes, ranks, torch.float16)
            print(f"| {name} | {c} | {c * k} | {mb(s['delta'])} | {mb(s['lora'])} | {mb(s['kohya'])} |")
        shapes = list(FLUX.values())
        ranks = [min(c * k, o, n) for o, n in shapes]
        s = sizes(shapes, ranks, torch.bfloat16)
        print(f"| FLUX.1 bf16, default | {c} | {c * k} | {mb(s['delta'])} | {mb(s['lora'])} | {mb(s['kohya'])} |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
