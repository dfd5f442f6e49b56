"""Tiny random jaxprune mixture-of-experts models and a NumPy router that routes by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.models import LanguageModel, MixtralConfig

TINY_MOE = dict(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_local_experts=6,
    num_experts_per_tok=2,
    max_position_embeddings=64,
)


def moe_model(config_cls=MixtralConfig, seed: int = 0, **overrides):
    """A tiny random MoE and params with O(1) activations (kernels ~ N(0, 1/fan_in), norms
    ~ 1 + N(0, 0.01))."""
    model = LanguageModel(config_cls(**{**TINY_MOE, **overrides}))
    rng = np.random.default_rng(seed)

    def draw(leaf):
        shape = np.shape(leaf)
        scale = shape[-2] ** -0.5 if len(shape) >= 2 else 0.1
        base = 0.0 if len(shape) >= 2 else 1.0
        return jnp.asarray(base + scale * rng.standard_normal(shape), jnp.float32)

    return model, jax.tree.map(draw, jax.eval_shape(model.init_params))


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def route_by_hand(x: np.ndarray, router: np.ndarray, top_k: int):
    """``(probs, routed)``: the router's softmax ``(tokens, experts)`` and, per expert, the
    indices of the tokens whose top-k it is in."""
    logits = x @ router
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    top = np.argsort(-probs, axis=1)[:, :top_k]
    return probs, [np.flatnonzero((top == j).any(1)) for j in range(router.shape[1])]


def expert_hidden(x: np.ndarray, experts: dict, j: int) -> np.ndarray:
    """Expert ``j``'s SwiGLU hidden activations (the input of its down projection)."""
    return silu(x @ experts["gate_proj"]["kernel"][j]) * (x @ experts["up_proj"]["kernel"][j])


def as_numpy(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)
