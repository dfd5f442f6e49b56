"""Float32 statistics of the inputs of one linear layer, accumulated batch by batch.

Wanda needs the squared norm of every input feature over the calibration tokens; SparseGPT needs
the Hessian of the layer-wise squared error, ``H = (2/N) Σ_t x_t x_tᵀ``. Both are kept as running
values of fixed size, so any number of batches can be added under ``jit`` without growing memory.

A method declares what it reads as a :class:`Statistic`, a pair of pure functions in the optax
style: ``init(d_in) -> state`` and ``update(state, x) -> state``. The engine calls the pair once
per input of a block without knowing what it computes, so a new statistic needs no engine change::

    stat = statistics.HESSIAN
    state = stat.init(d_in)
    for x in batches:
        state = stat.update(state, x)          # jit-able, the state is a pytree

:data:`SQ_NORMS`, :data:`HESSIAN` and :data:`MOMENTS` are the built-ins; :func:`combine` pairs
several into one whose state is the tuple of theirs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

# Statistics are sums of many products; TPU's default matmul precision (bf16 passes) would lose
# most of their digits.
_PRECISION = jax.lax.Precision.HIGHEST

TOKEN_CHUNK = 256
"""Tokens per partial product of every sum over tokens in fixed order (see :func:`token_sum`)."""

FIXED_ORDER = "JAXPRUNE_FIXED_ORDER_SUMS"
"""Environment variable: ``1`` sums over tokens in a fixed order (:func:`token_sum`) and, on CPU,
runs the solvers' Cholesky factorisations in XLA instead of LAPACK
(:mod:`jaxprune.methods.linalg`), so a prune gives the same bits whatever number of threads XLA's
CPU backend uses and whichever kernels scipy's OpenBLAS picks for the CPU. Read when a statistic
or solver is traced, so set it before the first prune."""


def fixed_order() -> bool:
    """Whether sums over tokens run in a fixed order (:data:`FIXED_ORDER` is ``1``)."""
    return os.environ.get(FIXED_ORDER) == "1"


class Statistic(NamedTuple):
    """A statistic of a linear layer's inputs: ``init(d_in)`` → state, ``update(state, x)`` → state.

    ``x`` is ``(..., d_in)`` (every leading index one token); the state is a pytree of float32
    arrays of fixed size, so ``update`` runs under ``jit`` batch after batch.
    ``update_masked(state, x, mask)`` adds only the tokens of ``(tokens, d_in)`` ``x`` where the
    bool ``(tokens,)`` ``mask`` is true, as ``update`` of those tokens alone would (a
    mixture-of-experts expert sees only its routed tokens); ``None`` when the statistic has none.
    """

    init: Callable[[int], Any]
    update: Callable[[Any, jax.Array], Any]
    update_masked: Callable[[Any, jax.Array, jax.Array], Any] | None = None


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


class Moments(NamedTuple):
    """First and second moments of every input feature: ``Σ x_j``, ``Σ x_j²`` and the count."""

    sum: jax.Array
    sq_sum: jax.Array
    count: jax.Array

    @property
    def mean(self) -> jax.Array:
        return self.sum / jnp.maximum(self.count, 1).astype(jnp.float32)

    @property
    def variance(self) -> jax.Array:
        """The (biased) variance of each input feature over the tokens."""
        return jnp.maximum(self.sq_sum / jnp.maximum(self.count, 1) - self.mean**2, 0.0)


def init_stats(d_in: int, with_hessian: bool) -> LinearStats:
    """Empty statistics for a layer with ``d_in`` inputs (``d_in``, ``with_hessian`` static)."""
    hessian = jnp.zeros((d_in, d_in), jnp.float32) if with_hessian else None
    return LinearStats(hessian, jnp.zeros((d_in,), jnp.float32), jnp.zeros((), jnp.int32))


def _tokens(x: jax.Array, d_in: int) -> jax.Array:
    if x.shape[-1:] != (d_in,):
        raise ValueError(
            f"inputs of shape {x.shape} do not match statistics of a layer with {d_in} inputs; "
            "the last axis of x must be the layer's input features"
        )
    return x.reshape(-1, d_in).astype(jnp.float32)


def accumulate(stats: LinearStats, x: jax.Array, mask: jax.Array | None = None) -> LinearStats:
    """Adds the tokens of ``x`` to ``stats``.

    Args:
      stats: the statistics so far (from :func:`init_stats` or a previous call).
      x: inputs of the layer, ``(..., in)`` of any float dtype; every leading index is one token.
      mask: bool, one per token: only these tokens are added (the others are zeroed, which adds
        exact zeros to every sum, and are not counted). ``None``: every token.

    Returns:
      The updated statistics (float32).
    """
    d_in = stats.sq_norms.shape[0]
    tokens = x.reshape(-1, d_in) if x.shape[-1:] == (d_in,) else x
    x = _tokens(x, d_in)
    batch = x.shape[0]
    if mask is not None:
        mask = mask.reshape(-1)
        x = jnp.where(mask[:, None], x, 0.0)
        tokens = jnp.where(mask[:, None], tokens, jnp.zeros((), tokens.dtype))
        batch = jnp.sum(mask, dtype=jnp.int32)
    total = stats.count + batch
    hessian = stats.hessian
    if hessian is not None:
        # Running mean: rescale the old estimate to the new token count instead of summing, so its
        # magnitude does not grow with the amount of calibration data.
        denom = jnp.maximum(total, 1).astype(jnp.float32)
        hessian = hessian * (stats.count.astype(jnp.float32) / denom) + (2.0 / denom) * gram(tokens)
    sq_norms = stats.sq_norms + column_sum(x * x)
    return LinearStats(hessian, sq_norms, total)


def token_sum(x: jax.Array, product: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """``Σ_k product(X_k)`` over consecutive chunks ``X_k`` of :data:`TOKEN_CHUNK` tokens of the
    ``(tokens, d)`` array ``x``, added in order.

    This makes every sum over tokens independent of the machine's thread count. XLA's CPU backend
    splits one long contraction or column sum into as many partial sums as its thread pool has
    threads (the number of cores the process may use), so a single ``XᵀX`` over 4096 tokens
    differs in its last bits between 1 and 2 threads, and one over 512 tokens of width 64 between
    2, 4 and 8 threads: a flipped near-tie in one block's mask then changes every later block.
    Products over 256 tokens added in a loop gave the same bits for 1 to 64 threads (widths 16 to
    1536). The last chunk is padded with zero tokens, which add exact zeros.
    """
    x = jnp.asarray(x)
    n = x.shape[0]
    if n == 0:
        return product(x)
    size = min(TOKEN_CHUNK, n)
    pad = -n % size
    if pad:
        x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
    chunks = x.reshape(-1, size, *x.shape[1:])
    first = product(chunks[0])
    add = lambda k, acc: acc + product(jax.lax.dynamic_index_in_dim(chunks, k, keepdims=False))  # noqa: E731
    return jax.lax.fori_loop(1, chunks.shape[0], add, first)


def column_sum(x: jax.Array) -> jax.Array:
    """``Σ_t x_t`` of float32 ``(tokens, d)`` inputs; with :data:`FIXED_ORDER` a product with
    ones per chunk of tokens (a thread-count-independent sum, see :func:`token_sum`)."""
    if not fixed_order():
        return jnp.sum(x, axis=0)

    def product(chunk: jax.Array) -> jax.Array:
        ones = jnp.ones((chunk.shape[0],), jnp.float32)
        return jnp.matmul(ones, chunk, precision=_PRECISION)

    return token_sum(x, product)


def total(x: jax.Array) -> jax.Array:
    """The sum of every entry of ``(tokens, d)`` inputs (with :data:`FIXED_ORDER`, of their
    :func:`column_sum`)."""
    return jnp.sum(column_sum(x)) if fixed_order() else jnp.sum(x)


def gram(x: jax.Array) -> jax.Array:
    """``XᵀX`` in float32 of ``(tokens, d)`` inputs, at tensor-core speed where that is exact.

    bfloat16 and float16 inputs are multiplied as they are with float32 accumulation: the product
    of two such numbers is exact in float32, so this equals the float32 product of the upcast
    inputs up to accumulation order, at the accelerator's low-precision matmul speed (about 8× the
    float32 rate on an H100). Float32 inputs use the full float32 precision (``HIGHEST``), which
    TPU and GPU defaults would otherwise lower to bfloat16 passes. With :data:`FIXED_ORDER`,
    summed in chunks of tokens in a fixed order (:func:`token_sum`), so the result does not depend
    on the thread count.
    """
    if x.dtype in (jnp.bfloat16, jnp.float16):
        product = lambda c: jnp.matmul(c.T, c, preferred_element_type=jnp.float32)  # noqa: E731
    else:
        x = x.astype(jnp.float32)
        product = lambda c: jnp.matmul(c.T, c, precision=_PRECISION)  # noqa: E731
    return token_sum(x, product) if fixed_order() else product(x)


def hessian(stats: LinearStats) -> jax.Array:
    """The SparseGPT Hessian ``H = (2/N) Σ x xᵀ`` (float32 ``(in, in)``; zeros before any token)."""
    if stats.hessian is None:
        raise ValueError(
            "these statistics hold no Hessian; create them with init_stats(d_in, with_hessian=True)"
        )
    return stats.hessian


def init_moments(d_in: int) -> Moments:
    """Empty :class:`Moments` for a layer with ``d_in`` inputs."""
    zeros = jnp.zeros((d_in,), jnp.float32)
    return Moments(zeros, zeros, jnp.zeros((), jnp.int32))


def accumulate_moments(moments: Moments, x: jax.Array, mask: jax.Array | None = None) -> Moments:
    """Adds the tokens of ``x`` (``(..., in)``) to ``moments`` (only those where the bool
    ``mask``, one per token, is true; ``None``: all)."""
    x = _tokens(x, moments.sum.shape[0])
    count = x.shape[0]
    if mask is not None:
        x = jnp.where(mask.reshape(-1)[:, None], x, 0.0)
        count = jnp.sum(mask, dtype=jnp.int32)
    return Moments(
        moments.sum + column_sum(x),
        moments.sq_sum + column_sum(x * x),
        moments.count + count,
    )


def _init_sq_norms(d_in: int) -> LinearStats:
    return init_stats(d_in, with_hessian=False)


def _init_hessian(d_in: int) -> LinearStats:
    return init_stats(d_in, with_hessian=True)


SQ_NORMS = Statistic(_init_sq_norms, accumulate, accumulate)
"""Squared input norms ``Σ x_j²`` and the token count (Wanda, RIA): a :class:`LinearStats`
without a Hessian."""

HESSIAN = Statistic(_init_hessian, accumulate, accumulate)
"""SparseGPT's ``H = (2/N) Σ x xᵀ`` (running mean) together with the squared norms."""

MOMENTS = Statistic(init_moments, accumulate_moments, accumulate_moments)
"""Per-feature sum, squared sum and count (:class:`Moments`: mean and variance of each input)."""


def combine(*statistics: Statistic) -> Statistic:
    """One statistic whose state is the tuple of the given ones' states (optax's ``chain``).

    Example: ``combine(SQ_NORMS, MOMENTS)`` gives ``(LinearStats, Moments)`` states.
    """
    if not statistics:
        raise ValueError("combine needs at least one statistic")
    parts = tuple(statistics)

    def init(d_in: int) -> tuple[Any, ...]:
        return tuple(stat.init(d_in) for stat in parts)

    def update(states: tuple[Any, ...], x: jax.Array) -> tuple[Any, ...]:
        return tuple(stat.update(state, x) for stat, state in zip(parts, states, strict=True))

    def update_masked(states: tuple[Any, ...], x: jax.Array, mask: jax.Array) -> tuple[Any, ...]:
        pairs = zip(parts, states, strict=True)
        return tuple(stat.update_masked(state, x, mask) for stat, state in pairs)

    masked = all(stat.update_masked is not None for stat in parts)
    return Statistic(init, update, update_masked if masked else None)


__all__ = [
    "HESSIAN",
    "MOMENTS",
    "SQ_NORMS",
    "LinearStats",
    "Moments",
    "Statistic",
    "accumulate",
    "accumulate_moments",
    "FIXED_ORDER",
    "column_sum",
    "combine",
    "fixed_order",
    "gram",
    "hessian",
    "init_moments",
    "init_stats",
    "token_sum",
    "total",
]
