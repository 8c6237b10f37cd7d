"""The real CLIP BPE tokenizer, built offline from the vocabulary that ships in the ``open_clip_torch`` wheel.

CLIP's vocabulary is: the 256 byte symbols, the same with the end-of-word marker ``</w>``, one symbol per
merge rule (the first 48,894 rules of ``bpe_simple_vocab_16e6``), then ``<|startoftext|>`` and
``<|endoftext|>`` -- 49,408 entries, identical to ``openai/clip-vit-large-patch14``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_N_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def bpe_vocab_path() -> Path:
    """Path of the gzipped CLIP merges inside the installed ``open_clip_torch`` wheel (never imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the CLIP vocabulary ships in the 'open_clip_torch' wheel: pip install --no-deps open_clip_torch"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _VOCAB_FILE
    if not path.is_file():
        raise RuntimeError(f"open_clip_torch is installed but {path} is missing")
    return path


def write_clip_tokenizer_files(directory: str | os.PathLike) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of the real CLIP tokenizer into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(bpe_vocab_path(), "rt", encoding="utf-8").read().split("\n")
    merges = lines[1 : _N_MERGES + 1]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return directory


def cache_dir() -> Path:
    """Where derived files live: ``$ERASEPRO_CACHE_DIR``, else ``$XDG_CACHE_HOME/erasepro`` or ``~/.cache/erasepro``."""
    if os.environ.get("ERASEPRO_CACHE_DIR"):
        return Path(os.environ["ERASEPRO_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "erasepro"


@lru_cache(maxsize=1)
def _tokenizer_dir() -> Path:
    """A shared, versioned folder with the tokenizer files, built once per machine and published atomically."""
    src = bpe_vocab_path()
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    final = cache_dir() / f"clip-tokenizer-{digest}"
    if (final / "merges.txt").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".clip-tokenizer-", dir=final.parent))
    write_clip_tokenizer_files(tmp)
    try:
        os.rename(tmp, final)
    except OSError:  # another process published it first
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` with the real CLIP vocabulary, padded with ``<|endoftext|>`` like SD-1.x."""
    return CLIPTokenizer.from_pretrained(
        str(_tokenizer_dir()), model_max_length=model_max_length, pad_token="<|endoftext|>"
    )
