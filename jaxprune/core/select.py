"""Exact-count selection: the ``k`` smallest entries, without sorting.

Every pruning decision in jaxprune ends in "remove exactly these ``k``": per output channel
(Wanda), per layer (magnitude, RIA), per block of inputs (SparseGPT), per group of ``m`` (N:M), or
across the devices a kernel is split over. The functions here make that choice exactly — ties
broken by position like a stable argsort — by bisection over the 32-bit keys of the float32
scores, so ``k`` may be a traced value (one compiled program for every sparsity) and no sort is
ever taken.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["nm_prune_mask", "num_pruned", "order_keys", "smallest_mask", "smallest_mask_sharded"]


def num_pruned(sparsity: float, size: int) -> int:
    """⌊sparsity·size⌋, robust to float artefacts (``0.57 * 100 == 56.99…`` still gives 57)."""
    return math.floor(round(sparsity * size, 6))


def order_keys(scores: jax.Array) -> jax.Array:
    """uint32 keys ordered like the float32 values (the radix-sort trick: flip negatives)."""
    bits = lax.bitcast_convert_type(scores.astype(jnp.float32), jnp.uint32)
    negative = (bits >> 31) == 1
    return jnp.where(negative, ~bits, bits | jnp.uint32(1 << 31))


def _pinned(keys: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """``keys``, unchanged (``lo <= hi`` always holds), as a value XLA cannot prove unchanged.

    Every counting pass and the final comparisons must read the *same* keys. Left to itself, XLA
    fuses the score computation into each consumer and recomputes it there, and two fusions of the
    same float expression can round differently (seen on CPU with a guarded division: a key equal
    to the k-th in one pass compared below it in another, and a 2:4 group kept 3). Carrying the keys
    through the loop behind a condition the compiler cannot decide keeps them one buffer; an
    ``optimization_barrier`` does not, as XLA:CPU removes it before fusion.
    """
    return jnp.where(lo > hi, ~keys, keys)


def smallest_mask(scores: jax.Array, k: int | jax.Array, axis: int | None = None) -> jax.Array:
    """True at the ``k`` smallest entries along ``axis`` (of all entries when ``None``).

    Ties are broken by position, the lower index first, exactly like taking the first ``k`` of a
    stable argsort (values are ordered as float32; NaN counts as largest). ``k`` may be traced, so
    one compiled program serves every sparsity.

    No sort: the k-th smallest value is found by bisection over the 32-bit keys of the values, 32
    counting passes, each O(size) — about 10× faster than ``jnp.sort`` on CPU for a layer.
    """
    if axis is None:
        return smallest_mask(scores.reshape(-1), k, axis=0).reshape(scores.shape)
    keys = order_keys(scores)
    k = jnp.asarray(k, jnp.int32)
    shape = list(keys.shape)
    shape[axis] = 1

    def halve(_, carry):
        lo, hi, keys = carry
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(keys <= mid, axis=axis, keepdims=True) >= k
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi), _pinned(keys, lo, hi)

    # Invariant: the smallest key t with #(keys <= t) >= k lies in [lo, hi].
    bounds = (jnp.zeros(shape, jnp.uint32), jnp.full(shape, 0xFFFFFFFF, jnp.uint32), keys)
    kth, _, keys = lax.fori_loop(0, 32, halve, bounds)
    below = keys < kth
    at = keys == kth
    room = k - jnp.sum(below, axis=axis, keepdims=True)
    # Among the entries equal to the k-th value, the first `room` in index order are selected.
    rank_at = jnp.cumsum(at, axis=axis) - 1
    return (below | (at & (rank_at < room))) & (k > 0)


def nm_prune_mask(scores: jax.Array, n: int, m: int) -> jax.Array:
    """True at the ``m - n`` smallest scores of every ``m`` consecutive entries along axis 0."""
    d_in = scores.shape[0]
    if d_in % m:
        raise ValueError(
            f"an {n}:{m} pattern needs the input dimension to be a multiple of {m}, got {d_in}; "
            "use an unstructured target for this layer"
        )
    groups = scores.reshape(d_in // m, m, *scores.shape[1:])
    return smallest_mask(groups, m - n, axis=1).reshape(scores.shape)


def smallest_mask_sharded(
    scores: jax.Array, k: int | jax.Array, axis_name: str | tuple[str, ...]
) -> jax.Array:
    """Inside ``shard_map``: True at the ``k`` smallest of the scores of all devices together.

    The global array is the devices' local ``scores`` flattened and concatenated in the order of
    ``axis_index(axis_name)``; the result equals
    :func:`smallest_mask` of that array, ties included (lower global
    position first). Only scalars cross devices: 32 ``psum`` of counts for the bisection of the
    k-th value's 32-bit key, one to count the entries below it, and one ``all_gather`` of each
    device's count of ties, which places its ties after those of the devices before it.

    Args:
      scores: this device's scores (any shape; flattened in C order).
      k: how many to mark in all (a scalar, the same on every device).
      axis_name: the mesh axis or axes the scores are split over.

    Returns:
      A bool mask of ``scores``' shape.
    """
    keys = order_keys(scores).reshape(-1)
    k = jnp.asarray(k, jnp.int32)

    def count(mask: jax.Array) -> jax.Array:
        return lax.psum(jnp.sum(mask, dtype=jnp.int32), axis_name)

    def halve(_, carry):
        lo, hi, keys = carry
        mid = lo + (hi - lo) // 2
        enough = count(keys <= mid) >= k
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi), _pinned(keys, lo, hi)

    # Invariant: the smallest key t with #(keys <= t) >= k over all devices lies in [lo, hi].
    bounds = (jnp.uint32(0), jnp.uint32(0xFFFFFFFF), keys)
    kth, _, keys = lax.fori_loop(0, 32, halve, bounds)
    below = keys < kth
    at = keys == kth
    room = k - count(below)
    ties = lax.all_gather(jnp.sum(at, dtype=jnp.int32), axis_name)
    me = lax.axis_index(axis_name)
    ties_before = jnp.sum(jnp.where(jnp.arange(ties.shape[0]) < me, ties, 0))
    rank_at = ties_before + jnp.cumsum(at) - 1
    return ((below | (at & (rank_at < room))) & (k > 0)).reshape(scores.shape)
