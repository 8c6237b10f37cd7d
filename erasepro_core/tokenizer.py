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

from transformers import CLIPTokenizer, T5TokenizerFast

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


@lru_cache(maxsize=1)
def _t5_model() -> str:
    """A Unigram (sentencepiece-style) tokenizer over the CLIP vocabulary's alphabetic words, serialised.

    Whole words score by length so common words stay one piece; short words double as subword pieces and
    single letters back everything else up (there is no ``<unk>`` for lowercase text).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    words = sorted({w[:-4] for w in clip_tokenizer().get_vocab() if w.endswith("</w>") and w[:-4].isalpha()})
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + w, -0.1 * len(w) - 1) for w in words]
    pieces += [(w, -0.1 * len(w) - 3) for w in words if len(w) <= 3]
    pieces += [(c, -10.0) for c in sorted({c for w in words for c in w}) + list(",.!?'-:;")] + [("▁", -5.0)]
    scores = dict(reversed(pieces))  # a piece listed twice keeps its first score
    tk = Tokenizer(models.Unigram([(p, scores[p]) for p in dict.fromkeys(p for p, _ in pieces)], unk_id=2,
                                  byte_fallback=False))
    # Like T5's sentencepiece model: case folded here (the CLIP words are lowercase), spaces normalised.
    tk.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Strip(),
                                          normalizers.Replace(Regex(" {2,}"), " ")])
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tk.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tk.to_str()


def t5_tokenizer(model_max_length: int = 512) -> T5TokenizerFast:
    """A T5-style tokenizer (no BOS, ``</s>`` appended, ``<pad>`` = 0) built offline for the tiny FLUX pipeline;
    ``model_max_length`` is the length the pipeline pads T5 prompts to (its ``max_sequence_length``)."""
    from tokenizers import Tokenizer

    return T5TokenizerFast(tokenizer_object=Tokenizer.from_str(_t5_model()), eos_token="</s>", pad_token="<pad>",
                           unk_token="<unk>", extra_ids=0, model_max_length=model_max_length)
