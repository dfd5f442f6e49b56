"""Tiny random model configurations shared by the tests (fast to build, GQA included)."""

from jaxprune.models import LlamaConfig

# Two blocks, grouped-query attention (4 query heads over 2 key/value heads).
TINY_LLAMA = LlamaConfig(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)

# The same model with widths that split 8 ways (the 8-device sharding checks); built anew rather
# than with dataclasses.replace, which would keep TINY_LLAMA's derived head_dim.
TINY_LLAMA_8WAY = LlamaConfig(
    vocab_size=64,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)
