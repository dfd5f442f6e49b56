"""Static-shape token selection shared by the token-pruning methods.

Every method scores the patch tokens (the prefix tokens are never candidates) and keeps a fixed
number of them; kept tokens stay in their original order, so the CLS token stays first and the
positions of the survivors keep their meaning.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def keep_top(scores: jax.Array, k: int) -> jax.Array:
    """Indices ``(batch, k)`` of the ``k`` highest ``scores`` per row, in increasing order.

    Ties go to the lower index (``lax.top_k``'s order), so the choice is deterministic.
    """
    _, idx = jax.lax.top_k(scores, k)
    return jnp.sort(idx, axis=-1)


def take_tokens(x: jax.Array, idx: jax.Array) -> jax.Array:
    """``x[b, idx[b]]`` for ``x`` of shape ``(batch, tokens, ...)`` and ``idx`` ``(batch, k)``."""
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def keep_patches(x: jax.Array, prefix: int, patch_idx: jax.Array) -> jax.Array:
    """The prefix tokens of ``x`` followed by its patch tokens ``patch_idx`` (0 = first patch)."""
    return jnp.concatenate([x[:, :prefix], take_tokens(x[:, prefix:], patch_idx)], axis=1)


def submatrix(attn: jax.Array, idx: jax.Array) -> jax.Array:
    """``attn[b, :, idx[b]][:, :, :, idx[b]]``: the attention among the tokens ``idx``."""
    rows = jnp.take_along_axis(attn, idx[:, None, :, None], axis=2)
    return jnp.take_along_axis(rows, idx[:, None, None, :], axis=3)


__all__ = ["keep_patches", "keep_top", "submatrix", "take_tokens"]
