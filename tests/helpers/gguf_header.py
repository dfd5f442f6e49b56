"""The GGUF hyper-parameters llama.cpp's converters write from a transformers config."""

from __future__ import annotations

from typing import Any


def add_hyperparameters(
    writer: Any, config: Any, rope_theta: float, head_dim: int | None = None
) -> None:
    """Blocks, context, widths, head counts, RMSNorm epsilon and RoPE base to ``writer`` (a
    ``gguf.GGUFWriter``); with ``head_dim``, the key and value lengths too."""
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    if head_dim is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(rope_theta)
