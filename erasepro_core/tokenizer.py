"""The real CLIP BPE tokenizer, built offline from the vocabulary the package already ships.

The bundled model's ``tokenizer/tokenizer.json`` holds CLIP's BPE model: 49,408 entries (the 256 byte symbols,
the same with ``</w>``, one symbol per merge rule of ``bpe_simple_vocab_16e6``, then ``<|startoftext|>`` and
``<|endoftext|>``) and 48,894 merges — identical to ``openai/clip-vit-large-patch14``. They are written out once
as ``vocab.json``/``merges.txt`` and loaded with transformers' ``CLIPTokenizer``.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

from erasepro_core.bundled import MODEL_DIR
from erasepro_core.io import cache_dir, publish_dir

N_VOCAB = 49408
N_MERGES = 49152 - 256 - 2


def tokenizer_json_path() -> Path:
    """CLIP's BPE model as shipped with the bundled shapes model (package data)."""
    return MODEL_DIR / "tokenizer" / "tokenizer.json"


def write_clip_tokenizer_files(directory: str | os.PathLike, source: Path | None = None) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of the real CLIP tokenizer into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = json.loads((source or tokenizer_json_path()).read_text(encoding="utf-8"))["model"]
    vocab, merges = model["vocab"], [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    if model.get("type") != "BPE" or len(vocab) != N_VOCAB or len(merges) != N_MERGES:
        raise RuntimeError(f"{source or tokenizer_json_path()} does not hold CLIP's BPE vocabulary")
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return directory


@lru_cache(maxsize=1)
def _tokenizer_dir() -> Path:
    """A shared, versioned folder with the tokenizer files, built once per machine and published atomically."""
    src = tokenizer_json_path()
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    final = cache_dir() / f"clip-tokenizer-json-{digest}"
    if (final / "merges.txt").is_file():
        return final
    return publish_dir(final, write_clip_tokenizer_files)


def clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` with the real CLIP vocabulary, padded with ``<|endoftext|>`` like SD-1.x."""
    return CLIPTokenizer.from_pretrained(
        str(_tokenizer_dir()), model_max_length=model_max_length, pad_token="<|endoftext|>"
    )
