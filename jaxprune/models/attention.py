"""Causal softmax attention shared by the families: flash attention on GPUs, exact XLA elsewhere.

``causal_attention(q, k, v)`` is ``softmax(q kᵀ · scale + causal mask) v`` with the logits and the
softmax in float32 (the inputs' dtype otherwise), grouped-query heads included (``k``/``v`` may
have fewer heads than ``q``, each serving a group of consecutive query heads). On a GPU with
bfloat16/float16 inputs it runs cuDNN's fused (flash) kernel, which never materialises the
``(batch, heads, seq, seq)`` logits — at LLaMA-7B scale with 8 windows of 2048 tokens those are
4.3 GB per batch — and falls back to the XLA computation wherever cuDNN cannot run.
``JAXPRUNE_ATTENTION=xla`` in the environment forces the XLA computation everywhere. Float64
inputs (the tests' finite differences) compute in float64 throughout, which XLA's fused attention
(float32 logits) would not.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp

import jaxprune.models.kv_cache as kv_cache


def _use_cudnn(q: jax.Array) -> bool:
    return (
        os.environ.get("JAXPRUNE_ATTENTION", "auto") != "xla"
        and jax.default_backend() == "gpu"
        and q.dtype in (jnp.bfloat16, jnp.float16)
        and q.shape[-1] % 8 == 0
        and q.shape[-1] <= 256
    )


def causal_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, scale: float | None = None
) -> jax.Array:
    """Causal attention of ``(batch, seq, heads, head_dim)`` inputs; the output has ``q``'s shape.

    Args:
      q: queries ``(b, t, heads, d)``.
      k, v: keys and values ``(b, t, kv_heads, d)``; ``heads`` must be a multiple of ``kv_heads``.
      scale: the logit scale (default ``1/sqrt(d)``).
    """
    cache = kv_cache.active()
    if cache is not None:  # decoding: the new queries over the cached keys and values
        return kv_cache.cached_attention(q, k, v, scale, cache)
    if q.dtype == jnp.float64:
        return _float64_attention(q, k, v, scale)
    if _use_cudnn(q):
        try:
            return jax.nn.dot_product_attention(
                q, k, v, scale=scale, is_causal=True, implementation="cudnn"
            )
        except (RuntimeError, ValueError, NotImplementedError):
            pass  # an unsupported shape or cuDNN version: the exact XLA computation below
    return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True, implementation="xla")


def _float64_attention(q, k, v, scale):
    b, t, heads, d = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, t, kv_heads, heads // kv_heads, d)
    logits = jnp.einsum("bqhgd,bkhd->bhgqk", q, k) * (1 / math.sqrt(d) if scale is None else scale)
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    probs = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), axis=-1)
    return jnp.einsum("bhgqk,bkhd->bqhgd", probs, v).reshape(b, t, heads, d)
