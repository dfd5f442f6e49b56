"""The compiled SparseGPT sweep and the validation of its inputs (see :mod:`.sparsegpt`)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxprune.core.select import num_pruned, smallest_mask
from jaxprune.core.sparsity import NM, Target
from jaxprune.methods.base import check_kernel, check_target
from jaxprune.methods.obs import inverse_hessian_factor

_PRECISION = lax.Precision.HIGHEST


def default_unroll() -> int | bool:
    """How far the solver unrolls its loop over one block's inputs on this backend.

    On a GPU every iteration of a compiled loop waits for the device, and one column step is
    microseconds of work, so the 128 steps of a block are unrolled into one loop body; on a CPU
    the loop costs nothing extra and unrolling only lengthens compilation.
    """
    return True if jax.default_backend() == "gpu" else 1


@functools.partial(jax.jit, static_argnames=("blocksize", "nm", "select", "segments", "unroll"))
def sweep(
    kernel: jax.Array,
    hessian: jax.Array,
    block_counts: jax.Array,
    percdamp: jax.Array,
    *,
    blocksize: int,
    nm: tuple[int, int] | None,
    select: Callable[[jax.Array, jax.Array], jax.Array] = smallest_mask,
    segments: tuple[int, ...] | None = None,
    unroll: int | bool = 1,
):
    """The compiled solver; ``block_counts[b]`` = weights to prune in block ``b`` (unstructured).

    ``select(scores, k)`` marks the ``k`` smallest of an unstructured block's scores. Output
    columns are otherwise independent, so :func:`prune_kernel_sharded` runs this function on a
    slice of the columns inside ``shard_map`` with a ``select`` that counts across the slices,
    and :func:`prune_kernels` on several kernels side by side: with ``segments`` (their widths)
    each selects on its own columns, ``block_counts[s, b]`` weights in block ``b`` of kernel ``s``.
    """
    d_in, d_out = kernel.shape
    num_blocks = -(-d_in // blocksize)
    padded = num_blocks * blocksize
    idx = jnp.arange(d_in)

    w = kernel.astype(jnp.float32)
    h = hessian.astype(jnp.float32)
    diag = jnp.diagonal(h)
    dead = diag == 0
    h = h.at[idx, idx].set(jnp.where(dead, 1.0, diag))
    w = jnp.where(dead[:, None], 0.0, w)
    upper, finite, damping = inverse_hessian_factor(h, percdamp)

    # Padding inputs: zero weights and an identity block of U, so they neither receive nor send
    # any update (U is block diagonal between real and padding inputs).
    pad = padded - d_in
    upper = jnp.pad(upper, ((0, pad), (0, pad)))
    upper = upper.at[jnp.arange(d_in, padded), jnp.arange(d_in, padded)].set(1.0)
    w = jnp.pad(w, ((0, pad), (0, 0)))
    real = jnp.arange(padded) < d_in
    bounds = np.cumsum((0, *(segments or (d_out,))))

    def block_step(b, carry):
        w, pruned = carry
        start = b * blocksize
        w1 = lax.dynamic_slice_in_dim(w, start, blocksize, axis=0)
        u1 = lax.dynamic_slice(upper, (start, start), (blocksize, blocksize))
        d = jnp.diagonal(u1)

        def column_step(i, carry):
            w1, err1, p1 = carry
            row = w1[i]
            q = jnp.where(p1[i], 0.0, row)
            err = (row - q) / u1[i, i]
            # U is upper triangular, so rows before i (already final) receive exact zeros.
            w1 = w1 - u1[i][:, None] * err[None, :]
            return w1.at[i].set(q), err1.at[i].set(err), p1

        zeros = jnp.zeros_like(w1)
        if nm is None:
            scores = w1**2 / (d**2)[:, None]
            scores = jnp.where(
                lax.dynamic_slice_in_dim(real, start, blocksize)[:, None], scores, jnp.inf
            )
            # Flattened in the reference's (out, in) order, so that ties resolve the same way.
            counts = block_counts[b] if segments is None else block_counts[:, b]
            p1 = jnp.concatenate(
                [
                    select(scores[:, lo:hi].T, counts if segments is None else counts[s]).T
                    for s, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
                ],
                axis=1,
            )
            w1, err1, p1 = lax.fori_loop(0, blocksize, column_step, (w1, zeros, p1), unroll=unroll)
        else:
            n, m = nm

            def group_step(g, carry):
                w1, err1, p1 = carry
                first = g * m
                # The group's mask is chosen from the weights as updated by the earlier inputs.
                rows = lax.dynamic_slice_in_dim(w1, first, m, axis=0)
                dg = lax.dynamic_slice_in_dim(d, first, m)
                pg = smallest_mask(rows**2 / (dg**2)[:, None], m - n, axis=0)
                p1 = lax.dynamic_update_slice_in_dim(p1, pg, first, axis=0)
                return lax.fori_loop(
                    0, m, lambda j, c: column_step(first + j, c), (w1, err1, p1), unroll=unroll
                )

            init = (w1, zeros, jnp.zeros(w1.shape, jnp.bool_))
            w1, err1, p1 = lax.fori_loop(0, blocksize // m, group_step, init, unroll=unroll)

        w = lax.dynamic_update_slice_in_dim(w, w1, start, axis=0)
        pruned = lax.dynamic_update_slice_in_dim(pruned, p1, start, axis=0)
        # Lazy batch update of every later input; the rows of U for this block are zero left of
        # the block, and the block itself is masked out, so earlier inputs are untouched.
        u_rows = lax.dynamic_slice_in_dim(upper, start, blocksize, axis=0)
        u_rows = jnp.where(jnp.arange(padded)[None, :] >= start + blocksize, u_rows, 0.0)
        w = w - jnp.matmul(u_rows.T, err1, precision=_PRECISION)
        return w, pruned

    init = (w, jnp.zeros(w.shape, jnp.bool_))
    w, pruned = lax.fori_loop(0, num_blocks, block_step, init)
    return w[:d_in].astype(kernel.dtype), ~pruned[:d_in], finite, damping


def solver_inputs(
    kernel: jax.Array, hessian: jax.Array, target: Target, *, blocksize: int, percdamp: float
) -> tuple[jax.Array, jax.Array, jax.Array, int, tuple[int, int] | None]:
    """Validates :func:`prune_kernel`'s arguments and derives the compiled solver's inputs.

    Returns:
      ``(kernel, hessian, block_counts, blocksize, nm)``: the arrays, the number of weights to
      prune in each block of inputs (unstructured; counted over all outputs), the clamped
      blocksize and ``(n, m)`` or ``None``.
    """
    check_target(target, "sparsegpt")
    kernel = jnp.asarray(kernel)
    hessian = jnp.asarray(hessian)
    check_kernel(kernel, "sparsegpt")
    d_in = kernel.shape[0]
    if hessian.shape != (d_in, d_in):
        raise ValueError(
            f"sparsegpt needs an (in, in) = ({d_in}, {d_in}) Hessian for a kernel of shape "
            f"{kernel.shape}, got {hessian.shape}; kernels must be in Flax (in, out) layout"
        )
    if not isinstance(blocksize, int | np.integer) or blocksize <= 0:
        raise ValueError(f"blocksize must be a positive integer, got {blocksize!r}")
    if not (np.isfinite(percdamp) and percdamp >= 0):
        raise ValueError(f"percdamp must be a finite number >= 0, got {percdamp!r}")
    blocksize = min(int(blocksize), d_in)
    if isinstance(target, NM):
        if d_in % target.m or blocksize % target.m:
            raise ValueError(
                f"sparsegpt {target} needs the input dimension ({d_in}) and blocksize "
                f"({blocksize}) to be multiples of {target.m}"
            )
        return kernel, hessian, jnp.zeros(1, jnp.int32), blocksize, (target.n, target.m)
    sizes = [min(blocksize, d_in - start) * kernel.shape[1] for start in range(0, d_in, blocksize)]
    counts = np.array([num_pruned(target.sparsity, size) for size in sizes], np.int32)
    return kernel, hessian, jnp.asarray(counts), blocksize, None


__all__ = ["default_unroll", "solver_inputs", "sweep"]
