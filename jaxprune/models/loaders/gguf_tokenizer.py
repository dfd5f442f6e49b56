"""Tokenizers rebuilt from a GGUF file's ``tokenizer.ggml.*`` metadata.

Two kinds, as llama.cpp runs them:

- ``gpt2``: byte-level BPE with the file's merges (SmolLM, GPT-2 style pre-tokenisation);
- ``llama``: SentencePiece-style BPE (Gemma). The file has no merges: SentencePiece merges, at each
  step, the adjacent pair of pieces whose concatenation is the vocabulary's highest-scoring piece.
  That is BPE whose merges are every split of a piece into two pieces, ranked by the merged piece's
  score. Spaces are written ``▁``; characters outside the vocabulary fall back to their UTF-8
  bytes (``<0x41>`` pieces); user-defined pieces (newlines, runs of spaces or tabs, HTML tags in
  Gemma) are matched whole in the raw text, as llama.cpp and SentencePiece do.

Control tokens (``<bos>``, ``<start_of_turn>``, ``<|im_end|>``) are special tokens matched whole.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from jaxprune.models.tokenizer import Tokenizer

# tokenizer.ggml.pre values whose byte-level pre-tokenisation we reproduce exactly.
SUPPORTED_PRE_TOKENIZERS = ("gpt-2", "smollm")
# llama.cpp token types (gguf.TokenType).
NORMAL, CONTROL, USER_DEFINED = 1, 3, 4
SPACE = "\u2581"


def tokenizer_from_gguf_metadata(
    meta: dict[str, Any], source: str | Path = "GGUF"
) -> Tokenizer | None:
    """Rebuilds the tokenizer that ``tokenizer.ggml.*`` metadata describes.

    Args:
      meta: GGUF metadata, key -> Python value (tokens, scores and merges as lists).
      source: named in warnings.

    Returns:
      The tokenizer, or ``None`` (with a warning) when the file has none or one of another kind:
      byte-level BPE with a pre-tokenizer not in :data:`SUPPORTED_PRE_TOKENIZERS`, SentencePiece
      with a space prefix (LLaMA 1/2), or another model (``t5``, ...).
    """
    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "gpt-2")
    if kind == "gpt2" and pre in SUPPORTED_PRE_TOKENIZERS:
        backend = _byte_level_bpe(meta, pre, source)
    elif kind == "llama" and meta.get("tokenizer.ggml.add_space_prefix", True) is False:
        backend = _sentencepiece_bpe(meta, source)
    else:
        warnings.warn(
            f"{source}: tokenizer (model={kind!r}, pre={pre!r}) is not supported (only model "
            f"'gpt2' with pre in {SUPPORTED_PRE_TOKENIZERS}, or 'llama' SentencePiece without a "
            "space prefix, as Gemma's); loading the model without one",
            stacklevel=3,
        )
        return None
    _add_whole_tokens(backend, meta)
    return Tokenizer(
        backend,
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
    )


def _vocab(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)
    return vocab


def _byte_level_bpe(meta: dict[str, Any], pre: str, source: str | Path):
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers

    merges = []
    for merge in meta.get("tokenizer.ggml.merges", []):
        pair = merge.split(" ")
        if len(pair) != 2:
            raise ValueError(f"{source}: malformed BPE merge {merge!r}")
        merges.append((pair[0], pair[1]))
    backend = Backend(models.BPE(vocab=_vocab(meta["tokenizer.ggml.tokens"]), merges=merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        # SmolLM splits every digit into its own word before the GPT-2 regex runs.
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    return backend


def sentencepiece_merges(
    tokens: list[str], scores: list[float], types: list[int]
) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's score-greedy merging of ``NORMAL`` pieces.

    Every split of a normal piece into two normal pieces is a merge; merges are ranked by the
    merged piece's score, highest first (ties: lower id first, then the shorter left part).
    """
    normal = {t: i for i, t in reversed(list(enumerate(tokens))) if types[i] == NORMAL}
    ranked = []
    for piece, i in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-scores[i], i, cut, left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _sentencepiece_bpe(meta: dict[str, Any], source: str | Path):
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, normalizers

    tokens = meta["tokenizer.ggml.tokens"]
    if "tokenizer.ggml.scores" not in meta:
        raise ValueError(f"{source}: a SentencePiece tokenizer needs tokenizer.ggml.scores")
    types = meta.get("tokenizer.ggml.token_type", [NORMAL] * len(tokens))
    merges = sentencepiece_merges(tokens, meta["tokenizer.ggml.scores"], types)
    unk = meta.get("tokenizer.ggml.unknown_token_id")
    backend = Backend(
        models.BPE(
            vocab=_vocab(tokens),
            merges=merges,
            unk_token=None if unk is None else tokens[unk],
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    backend.normalizer = normalizers.Replace(" ", SPACE)
    backend.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    return backend


def _add_whole_tokens(backend, meta: dict[str, Any]) -> None:
    """Control tokens become special tokens and user-defined ones added tokens, both matched in
    the raw text before the model runs (as in llama.cpp and the Hugging Face tokenizers)."""
    from tokenizers import AddedToken

    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type", [NORMAL] * len(tokens))
    added = {kind: [] for kind in (CONTROL, USER_DEFINED)}
    for i, t in enumerate(types):
        if t in added:
            added[t].append(AddedToken(tokens[i], special=t == CONTROL, normalized=False))
    backend.add_special_tokens(added[CONTROL])
    backend.add_tokens(added[USER_DEFINED])
