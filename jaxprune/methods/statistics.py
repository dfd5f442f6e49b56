"""Float32 statistics of the inputs of one linear layer, accumulated batch by batch.

Wanda needs the squared norm of every input feature over the calibration tokens; SparseGPT needs
the Hessian of the layer-wise squared error, ``H = (2/N) Σ_t x_t x_tᵀ``. Both are kept as running
values of fixed size, so any number of batches can be added under ``jit`` without growing memory.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# Statistics are sums of many products; TPU's default matmul precision (bf16 passes) would lose
# most of their digits.
_PRECISION = jax.lax.Precision.HIGHEST


class LinearStats(NamedTuple):
    """Statistics of the inputs ``x`` (``(..., in)``) of one linear layer.

    Attributes:
      hessian: ``(in, in)`` float32 ``(2/N) Σ x xᵀ`` over the tokens seen so far, or ``None`` when
        not collected. Kept as a running mean (as SparseGPT does) so its size stays bounded.
      sq_norms: ``(in,)`` float32 ``Σ x_j²`` over tokens (the squared column norms of ``X``).
      count: int32 scalar, the number of tokens ``N`` seen so far.
    """

    hessian: jax.Array | None
    sq_norms: jax.Array
    count: jax.Array


def init_stats(d_in: int, with_hessian: bool) -> LinearStats:
    """Empty statistics for a layer with ``d_in`` inputs (``d_in``, ``with_hessian`` static)."""
    hessian = jnp.zeros((d_in, d_in), jnp.float32) if with_hessian else None
    return LinearStats(hessian, jnp.zeros((d_in,), jnp.float32), jnp.zeros((), jnp.int32))


def accumulate(stats: LinearStats, x: jax.Array) -> LinearStats:
    """Adds the tokens of ``x`` to ``stats``.

    Args:
      stats: the statistics so far (from :func:`init_stats` or a previous call).
      x: inputs of the layer, ``(..., in)`` of any float dtype; every leading index is one token.

    Returns:
      The updated statistics (float32).
    """
    d_in = stats.sq_norms.shape[0]
    if x.shape[-1:] != (d_in,):
        raise ValueError(
            f"inputs of shape {x.shape} do not match statistics of a layer with {d_in} inputs; "
            "the last axis of x must be the layer's input features"
        )
    x = x.reshape(-1, d_in).astype(jnp.float32)
    batch = x.shape[0]
    total = stats.count + batch
    hessian = stats.hessian
    if hessian is not None:
        # Running mean: rescale the old estimate to the new token count instead of summing, so its
        # magnitude does not grow with the amount of calibration data.
        denom = jnp.maximum(total, 1).astype(jnp.float32)
        xtx = jnp.matmul(x.T, x, precision=_PRECISION)
        hessian = hessian * (stats.count.astype(jnp.float32) / denom) + (2.0 / denom) * xtx
    sq_norms = stats.sq_norms + jnp.sum(x * x, axis=0)
    return LinearStats(hessian, sq_norms, total)


def hessian(stats: LinearStats) -> jax.Array:
    """The SparseGPT Hessian ``H = (2/N) Σ x xᵀ`` (float32 ``(in, in)``; zeros before any token)."""
    if stats.hessian is None:
        raise ValueError(
            "these statistics hold no Hessian; create them with init_stats(d_in, with_hessian=True)"
        )
    return stats.hessian
