"""One tiny jaxprune config per registered family (GQA where the family has it), for tests that
need no transformers model."""

from jaxprune.models import (
    Gemma3Config,
    LlamaConfig,
    OPTConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)

_GQA = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
LLAMA31_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
FAMILY_CONFIGS = {
    "llama": LlamaConfig(**_GQA, rope_theta=5e5, rope_scaling=LLAMA31_SCALING),
    "qwen2": Qwen2Config(**_GQA, tie_word_embeddings=True),
    "qwen3": Qwen3Config(**_GQA, head_dim=16),
    "phi3": Phi3Config(**_GQA),
    "gemma3": Gemma3Config(
        **_GQA,
        head_dim=16,
        sliding_window=4,
        layer_types=("sliding_attention", "full_attention"),
        rope_theta=5000.0,
        rope_local_base_freq=100.0,
    ),
    "opt": OPTConfig(
        vocab_size=128,
        hidden_size=32,
        ffn_dim=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
    ),
}
