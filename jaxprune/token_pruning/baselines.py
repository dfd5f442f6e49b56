"""The baselines Zero-TPrune is measured against, with the same static-shape interface.

- ``random``: keep a uniformly random subset of the patch tokens (per image).
- ``evit``: keep the patch tokens the CLS token attends to most, attention averaged over heads
  (EViT's and ATS's criterion, without EViT's fused extra token and without fine-tuning).
- ``tome``: ToMe's bipartite soft matching: patch tokens alternate into sets A and B, each token of
  A is matched to its most similar token of B (cosine similarity of the head-averaged keys), and
  the ``r`` best-matched A tokens are **merged** into their matches by a size-weighted mean. Sizes
  are carried on, and later blocks use proportional attention (``+ log size`` on the logits).
  Unlike ToMe, which merges inside every block between attention and MLP, merging here happens
  between blocks at the schedule's layers, like the other methods.

Each ``reduce(x, taps, keep, ...)`` keeps ``keep`` patch tokens of ``x`` ``(batch, n, d)`` and
returns ``(x, sizes)`` (``sizes`` is ``None`` unless the method merges).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.token_pruning.select import keep_patches, keep_top, take_tokens


def random_reduce(x, taps, keep, *, prefix, rng, **_):
    """Keeps ``keep`` uniformly random patch tokens per image."""
    b, n = x.shape[:2]
    scores = jax.random.uniform(rng, (b, n - prefix))
    return keep_patches(x, prefix, keep_top(scores, keep)), None


def cls_attention(attn: jax.Array, prefix: int) -> jax.Array:
    """``(batch, patches)``: the CLS token's attention on each patch token, mean over heads."""
    return attn[:, :, 0, prefix:].astype(jnp.float32).mean(axis=1)


def evit_reduce(x, taps, keep, *, prefix, **_):
    """Keeps the ``keep`` patch tokens with the highest attention from the CLS token."""
    return keep_patches(x, prefix, keep_top(cls_attention(taps["attn"], prefix), keep)), None


def bipartite_matches(metric: jax.Array, r: int) -> tuple[jax.Array, jax.Array]:
    """ToMe's matching of ``metric`` ``(batch, m, d)``: A = even, B = odd positions.

    Returns:
      ``(merged, into)``: ``(batch, r)`` positions in A of the merged tokens and the positions in
      B they merge into.
    """
    metric = metric / jnp.maximum(jnp.linalg.norm(metric, axis=-1, keepdims=True), 1e-12)
    scores = jnp.einsum("bad,bcd->bac", metric[:, 0::2], metric[:, 1::2])
    best, best_idx = scores.max(-1), scores.argmax(-1)
    _, merged = jax.lax.top_k(best, r)
    return merged, jnp.take_along_axis(best_idx, merged, axis=1)


def tome_reduce(x, taps, keep, *, prefix, sizes=None, **_):
    """Merges patch tokens down to ``keep`` by bipartite soft matching; returns the new sizes."""
    b, n, d = x.shape
    m = n - prefix
    r = m - keep
    heads = taps["attn"].shape[1]
    metric = taps["keys"].reshape(b, n, heads, -1).astype(jnp.float32).mean(2)[:, prefix:]
    merged, into = bipartite_matches(metric, r)
    if sizes is None:
        sizes = jnp.ones((b, n), jnp.float32)
    size = sizes[:, prefix:]
    weighted = x[:, prefix:].astype(jnp.float32) * size[..., None]
    rows = jnp.arange(b)[:, None]
    a_pos, b_pos = jnp.arange(0, m, 2), jnp.arange(1, m, 2)
    src = a_pos[merged]  # patch positions of the merged tokens
    dst = b_pos[into]
    weighted = weighted.at[rows, dst].add(take_tokens(weighted, src))
    size = size.at[rows, dst].add(take_tokens(size, src))
    kept = keep_top(jnp.ones((b, m)).at[rows, src].set(0.0), keep)
    new_size = take_tokens(size, kept)
    patches = (take_tokens(weighted, kept) / new_size[..., None]).astype(x.dtype)
    return (
        jnp.concatenate([x[:, :prefix], patches], axis=1),
        jnp.concatenate([sizes[:, :prefix], new_size], axis=1),
    )


__all__ = ["bipartite_matches", "cls_attention", "evit_reduce", "random_reduce", "tome_reduce"]
