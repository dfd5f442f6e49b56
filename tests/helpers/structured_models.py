"""Tiny models for the structured-pruning tests: every leaf random (biases and norms included)."""

import jax
import jax.numpy as jnp
import numpy as np
from tiny_models import TINY_LLAMA

from jaxprune.models import LanguageModel, LlamaConfig, OPTConfig

# Three key/value heads with two query heads each (like SmolLM2's 3 × 3, smaller).
TINY_GQA = LlamaConfig(
    vocab_size=64,
    hidden_size=48,
    intermediate_size=40,
    num_hidden_layers=3,
    num_attention_heads=6,
    num_key_value_heads=3,
)
TINY_OPT = OPTConfig(
    vocab_size=64,
    hidden_size=32,
    ffn_dim=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
)
CONFIGS = {"llama": TINY_LLAMA, "gqa": TINY_GQA, "opt": TINY_OPT}


def random_params(model: LanguageModel, seed: int = 0):
    """Params with every leaf drawn at random (O(1) logits), so no group is special by chance."""
    params = model.init_params(seed)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    noisy = []
    for key, leaf in zip(keys, leaves, strict=True):
        noise = jax.random.normal(key, leaf.shape, leaf.dtype)
        scale = 1.0 / np.sqrt(leaf.shape[0]) if leaf.ndim == 2 else 0.1
        noisy.append(leaf + scale * noise)
    return jax.tree.unflatten(treedef, noisy)


def windows(n: int = 4, seqlen: int = 12, vocab: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, (n, seqlen)).astype(np.int32)


def logits(model: LanguageModel, params, tokens) -> np.ndarray:
    return np.asarray(model.logits(params, jnp.asarray(tokens)))
