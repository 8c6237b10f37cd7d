"""Prompts, concept spans and the target/anchor token pairing the solver constrains.

A *pair* ties position ``p_t`` of a target prompt to position ``p_a`` of the anchor prompt made from the
same template, at the same offset from the concept's last token (UCE's ``last`` policy is offset 0 only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from erasepro_core.methods.base import TokenPolicy


class TemplateError(ValueError):
    """A template cannot carry a concept (it splits a token or is too long for the tokenizer)."""


@dataclass(frozen=True)
class Tokenized:
    ids: list[int]  # BOS ... EOS, unpadded
    last: int  # position of the concept's last token (the prefix's last token for an empty concept)
    eos: int  # position of the first EOS
    shared: int = 1  # leading tokens set by the template alone (BOS + its text before {}): same for every concept


def _encode(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tok(text, add_special_tokens=False, truncation=False)["input_ids"]


def n_bos(tok: PreTrainedTokenizerBase) -> int:
    """1 when the tokenizer starts prompts with BOS (CLIP), 0 when it does not (T5)."""
    return 0 if tok.bos_token_id is None else 1


def with_specials(tok: PreTrainedTokenizerBase, body: list[int]) -> list[int]:
    """[BOS] + ``body`` + EOS, cut to the tokenizer's length with EOS kept last (what the pipelines encode)."""
    n_max = int(tok.model_max_length)
    ids = [tok.bos_token_id] * n_bos(tok) + [*body, tok.eos_token_id]
    return ids[: n_max - 1] + [tok.eos_token_id] if len(ids) > n_max else ids


def prompt_ids(tok: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of ``prompt`` as the UNet's context sees them (BOS … EOS, truncated), unpadded."""
    return with_specials(tok, _encode(tok, prompt))


def tokenize_concept(tok: PreTrainedTokenizerBase, template: str, concept: str) -> Tokenized:
    """Tokenise ``template.format(concept)`` and locate the concept's last token."""
    prefix = template.split("{}", 1)[0]
    body = _encode(tok, template.format(concept))
    head = _encode(tok, prefix + concept) if prefix + concept else []
    if body[: len(head)] != head:
        raise TemplateError(
            f"template {template!r} merges the concept {concept!r} with its neighbours into one token; "
            "separate {} from surrounding text with a space or punctuation"
        )
    n_max = int(tok.model_max_length)
    if len(body) + 2 > n_max and len(head) + 2 > n_max:
        raise TemplateError(
            f"prompt {template.format(concept)!r} does not fit the tokenizer's {n_max} positions "
            "before the concept ends"
        )
    ids = with_specials(tok, body)
    pre = _encode(tok, prefix) if prefix.strip() else []
    bos = n_bos(tok)
    shared = bos + len(pre) if body[: len(pre)] == pre and len(pre) <= len(head) else bos
    # Without BOS an empty concept in an empty prefix has no token of its own: its EOS stands in.
    return Tokenized(ids=ids, last=max(len(head) - 1 + bos, 0), eos=len(ids) - 1, shared=min(shared, len(ids)))


def offsets(t: Tokenized, policy: TokenPolicy, max_length: int) -> range:
    """Offsets from the concept's last token that the policy constrains."""
    if policy == "last":
        return range(1)
    if policy == "to_eos":
        return range(t.eos - t.last + 1)
    return range(max_length - t.last)


@dataclass
class PairSet:
    """Target/anchor prompts with the positions that are paired between them.

    ``target_rows``/``anchor_rows`` index into ``target_ids``/``anchor_ids`` (anchors deduplicated);
    ``positions`` hold ``(target_row, target_pos, anchor_row, anchor_pos)`` per constrained column.
    ``concept_of`` gives the edit index of every target row.
    """

    target_ids: list[list[int]] = field(default_factory=list)
    anchor_ids: list[list[int]] = field(default_factory=list)
    target_shared: list[int] = field(default_factory=list)  # Tokenized.shared per row
    anchor_shared: list[int] = field(default_factory=list)
    concept_of: list[int] = field(default_factory=list)
    positions: list[tuple[int, int, int, int]] = field(default_factory=list)

    @property
    def n_columns(self) -> int:
        return len(self.positions)


def build_pairs(
    tok: PreTrainedTokenizerBase,
    edits: list[tuple[str, str]],
    templates: list[str],
    policy: TokenPolicy,
    pooled: bool = False,
    bare_anchors: bool = False,
) -> PairSet:
    """Pair every target prompt (edit × template) with its anchor prompt, position by position (``pooled``: the
    EOS states only, whatever the policy — a pooled site reads nothing else). The anchor prompt uses the same
    template, or is the bare anchor with ``bare_anchors`` (UCE 2023 guides every phrasing to the bare guide)."""
    n_max = int(tok.model_max_length)
    out = PairSet()
    anchor_rows: dict[tuple[int, ...], int] = {}
    seen: dict[tuple[str, str], Tokenized] = {}  # anchors (and repeated targets) recur across edits

    def tokenized(template: str, concept: str) -> Tokenized:
        if (template, concept) not in seen:
            seen[(template, concept)] = tokenize_concept(tok, template, concept)
        return seen[(template, concept)]

    for k, (target, anchor) in enumerate(edits):
        for template in templates:
            t = tokenized(template, target)
            a = tokenized("{}" if bare_anchors else template, anchor)
            key = tuple(a.ids)
            if key not in anchor_rows:
                anchor_rows[key] = len(out.anchor_ids)
                out.anchor_ids.append(a.ids)
                out.anchor_shared.append(a.shared)
            row_t, row_a = len(out.target_ids), anchor_rows[key]
            out.target_ids.append(t.ids)
            out.target_shared.append(t.shared)
            out.concept_of.append(k)
            if pooled:
                out.positions.append((row_t, t.eos, row_a, a.eos))
                continue
            for off in offsets(t, policy, n_max):
                p_t, p_a = t.last + off, a.last + off
                if p_a >= n_max:
                    break
                out.positions.append((row_t, p_t, row_a, p_a))
    return out


def contains_concept(prompt: str, concepts: list[str]) -> bool:
    """True when ``prompt`` mentions any concept as whole words (case-insensitive)."""
    words = f" {' '.join(prompt.lower().replace(',', ' ').split())} "
    return any(f" {' '.join(c.lower().split())} " in words for c in concepts if c.strip())
