"""A tiny LLaMA with a word-level tokenizer saved as a jaxprune checkpoint: a model the CLI loads
in milliseconds, for tests of its behaviour rather than of pruning quality."""

from __future__ import annotations

from pathlib import Path

import tokenizers

from jaxprune.models import Gemma3Config, LanguageModel, LlamaConfig
from jaxprune.models.loaders import Pretrained, save_pruned
from jaxprune.models.tokenizer import Tokenizer

WORDS = "to be or not that is the question whether tis nobler in mind suffer slings arrows".split()

CONFIG = LlamaConfig(
    vocab_size=32,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    bos_token_id=0,
    eos_token_id=1,
)


def tiny_tokenizer() -> Tokenizer:
    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.decoder = tokenizers.decoders.WordPiece(prefix="##")
    return Tokenizer(backend, bos_token_id=0, eos_token_id=1)


def save_tiny_model(directory: Path) -> Path:
    model = LanguageModel(CONFIG)
    pretrained = Pretrained(model, model.init_params(0), tiny_tokenizer(), "tiny")
    save_pruned(directory, pretrained, pretrained.params)
    return directory


def write_corpus(path: Path, words: int = 4000) -> Path:
    """A text of ``words`` words of the tokenizer's vocabulary (deterministic)."""
    text = " ".join(WORDS[(i * 7 + i // 5) % len(WORDS)] for i in range(words))
    path.write_text(text)
    return path


GEMMA_CONFIG = Gemma3Config(
    vocab_size=32,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=16,
    sliding_window=8,
    layer_types=("sliding_attention", "full_attention"),
    max_position_embeddings=64,
    bos_token_id=0,
    eos_token_id=1,
)


def save_tiny_gemma(directory: Path) -> Path:
    """A tiny Gemma 3 (a family that expects BOS) with the word-level tokenizer."""
    model = LanguageModel(GEMMA_CONFIG)
    pretrained = Pretrained(model, model.init_params(0), tiny_tokenizer(), "tiny-gemma")
    save_pruned(directory, pretrained, pretrained.params)
    return directory
