"""Cholesky factorisations and Cholesky solves for the solvers, reproducible on CPU on demand.

On CPU, jaxlib takes its LAPACK (``potrf``, ``trsm``) from scipy's bundled OpenBLAS, which picks
its kernels for the CPU it runs on and splits its work by its thread count: the same Hessian
factorises into other bits on an AVX-512 and an AVX2 machine, or with one thread and with two
(measured: the README demo's SparseGPT 50% prints 59.67 with OpenBLAS's ``SkylakeX`` kernels and
60.62 with its ``Haswell`` ones, on one machine, everything else equal; see
``tests/pipeline/test_versions.py``).

With :data:`~jaxprune.methods.statistics.FIXED_ORDER` (``JAXPRUNE_FIXED_ORDER_SUMS=1``) the
solvers' factorisations on CPU use the blocked algorithms below instead: XLA's own element-wise
loops and matrix products whose inner dimension is one block (:data:`BLOCK`), so no product is
split over threads and no library picks kernels at run time. On other platforms, and without the
switch, they are ``jnp.linalg.cholesky`` and ``jax.scipy.linalg.cho_solve`` (cuSOLVER on GPU).

The blocked Cholesky is right-looking (factor the diagonal block, solve the panel below it with
the block's inverse, update the trailing matrix by a rank-``BLOCK`` product); the solves are block
forward and back substitutions in the same column order. A matrix whose size is not a multiple of
the block is padded with an identity block, which factorises to itself and changes nothing else.
Like LAPACK's, a matrix that is not positive definite gives non-finite entries (the square root
of a negative pivot), which the solvers detect and repair by damping.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxprune.methods.statistics import fixed_order

BLOCK = 128
"""Columns per block of the reproducible factorisations (the inner size of every product)."""

_HI = lax.Precision.HIGHEST


def _pad(a: jax.Array, rows: int, identity: bool) -> jax.Array:
    """``a`` grown to ``rows × rows`` (square, with an identity block) or ``rows`` rows (zeros)."""
    n = a.shape[0]
    if rows == n:
        return a
    if not identity:
        return jnp.concatenate([a, jnp.zeros((rows - n, *a.shape[1:]), a.dtype)])
    out = jnp.eye(rows, dtype=a.dtype)
    return out.at[:n, :n].set(a)


def _padded_size(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _cholesky_small(a: jax.Array) -> jax.Array:
    """Lower Cholesky factor of a ``BLOCK × BLOCK`` matrix, one column per step."""
    index = jnp.arange(a.shape[0])

    def column(j, lower):
        # lower's columns j.. are still zero, so the full product is the sum over k < j.
        v = a[:, j] - jnp.matmul(lower, lower[j], precision=_HI)
        pivot = jnp.sqrt(v[j])
        values = jnp.where(index > j, v / pivot, jnp.where(index == j, pivot, 0.0))
        return lower.at[:, j].set(values)

    return lax.fori_loop(0, a.shape[0], column, jnp.zeros_like(a))


def _lower_inverse_small(lower: jax.Array) -> jax.Array:
    """Inverse of a ``BLOCK × BLOCK`` lower-triangular matrix, one row per step."""
    eye = jnp.eye(lower.shape[0], dtype=lower.dtype)

    def row(i, inverse):
        # inverse's rows i.. are still zero, so the product is the sum over k < i.
        values = (eye[i] - jnp.matmul(lower[i], inverse, precision=_HI)) / lower[i, i]
        return inverse.at[i].set(values)

    return lax.fori_loop(0, lower.shape[0], row, jnp.zeros_like(lower))


def _blocks(n: int) -> list[slice]:
    return [slice(k, k + BLOCK) for k in range(0, n, BLOCK)]


def cholesky_blocked(a: jax.Array) -> jax.Array:
    """Lower Cholesky factor of the symmetric positive definite ``a`` (symmetrised first, as
    ``jnp.linalg.cholesky`` does), by the blocked right-looking algorithm of the module
    docstring; any platform."""
    n = a.shape[0]
    work = _pad((a + a.T) / 2, _padded_size(n), identity=True)
    lower = jnp.zeros_like(work)
    blocks = _blocks(work.shape[0])
    for k, b in enumerate(blocks):
        diagonal = _cholesky_small(work[b, b])
        lower = lower.at[b, b].set(diagonal)
        if k + 1 == len(blocks):
            break
        rest = slice(b.stop, None)
        panel = jnp.matmul(work[rest, b], _lower_inverse_small(diagonal).T, precision=_HI)
        lower = lower.at[rest, b].set(panel)
        work = work.at[rest, rest].add(-jnp.matmul(panel, panel.T, precision=_HI))
    return lower[:n, :n]


def cho_solve_blocked(lower: jax.Array, rhs: jax.Array) -> jax.Array:
    """``(L Lᵀ)⁻¹ rhs`` for the lower Cholesky factor ``L``: block forward then back substitution
    (every product's inner size one block); ``rhs`` is ``(n,)`` or ``(n, k)``; any platform."""
    n = lower.shape[0]
    vector = rhs.ndim == 1
    x = rhs[:, None] if vector else rhs
    size = _padded_size(n)
    factor = _pad(lower, size, identity=True)
    x = _pad(x, size, identity=False)
    blocks = _blocks(size)
    inverses = [_lower_inverse_small(factor[b, b]) for b in blocks]
    for k, b in enumerate(blocks):  # L y = rhs, column block by column block
        solved = jnp.matmul(inverses[k], x[b], precision=_HI)
        x = x.at[b].set(solved)
        rest = slice(b.stop, None)
        x = x.at[rest].add(-jnp.matmul(factor[rest, b], solved, precision=_HI))
    for k in reversed(range(len(blocks))):  # Lᵀ out = y, from the last block up
        b = blocks[k]
        solved = jnp.matmul(inverses[k].T, x[b], precision=_HI)
        x = x.at[b].set(solved)
        above = slice(0, b.start)
        x = x.at[above].add(-jnp.matmul(factor[b, above].T, solved, precision=_HI))
    x = x[:n]
    return x[:, 0] if vector else x


def cholesky(a: jax.Array) -> jax.Array:
    """Lower Cholesky factor of ``a``: :func:`cholesky_blocked` on CPU under
    :data:`~jaxprune.methods.statistics.FIXED_ORDER`, else ``jnp.linalg.cholesky``."""
    if not fixed_order():
        return jnp.linalg.cholesky(a)
    return lax.platform_dependent(a, cpu=cholesky_blocked, default=jnp.linalg.cholesky)


def cho_solve(lower: jax.Array, rhs: jax.Array) -> jax.Array:
    """``(L Lᵀ)⁻¹ rhs``: :func:`cho_solve_blocked` on CPU under
    :data:`~jaxprune.methods.statistics.FIXED_ORDER`, else ``jax.scipy.linalg.cho_solve``."""

    def library(lower, rhs):
        return jax.scipy.linalg.cho_solve((lower, True), rhs)

    if not fixed_order():
        return library(lower, rhs)
    return lax.platform_dependent(lower, rhs, cpu=cho_solve_blocked, default=library)


__all__ = ["BLOCK", "cho_solve", "cho_solve_blocked", "cholesky", "cholesky_blocked"]
