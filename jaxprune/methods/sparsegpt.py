"""SparseGPT: prune a layer and fix up the remaining weights with second-order updates.

Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot"
(2023), Algorithm 1, following the reference ``fasterprune``:

1. dead inputs (``H_ii == 0``: never non-zero in the calibration data) get ``H_ii = 1`` and their
   weights zeroed; ``percdamp · mean(diag H)`` is added to the diagonal;
2. ``U`` = the upper Cholesky factor of ``H⁻¹`` (``H⁻¹ = UᵀU``); row ``i`` of ``U`` divided by
   ``U_ii`` is the optimal update of the later weights when weight ``i`` is removed (OBS, eq. 3);
3. inputs are visited in blocks of ``blocksize``. Each block chooses its mask from the scores
   ``w² / U_ii²`` (unstructured: the ⌊s·count⌋ smallest of the whole block; N:M: in every group of
   ``m`` inputs, per output, the ``m − n`` smallest, chosen when the sweep reaches the group), then
   zeroes its inputs one at a time, pushing each one's error onto the not yet visited inputs of the
   block; the rest of the layer receives the block's errors in one matrix product ("lazy batch").

Everything runs in one compiled program per kernel shape (the target's sparsity is a traced value):
the input dimension is padded to a multiple of ``blocksize`` with inert inputs (zero weights, an
identity block in ``U``, excluded from the selection), so that blocks have a static size and the
loops over blocks and over inputs are both ``lax.fori_loop``. Flax kernels are ``(in, out)``: the
reference's columns are our rows.

Two deliberate differences from the reference: an unstructured block prunes exactly ⌊s·count⌋
weights (the reference's ``<=`` threshold takes one more, and ties), and when the damped Cholesky
fails (NaN; float32 on an ill-conditioned ``H``) the damping is retried ×10, up to 4 times, inside
the compiled program, with a warning (a ``percdamp`` of 0 retries from 0.01); a Hessian that no
damping repairs (non-finite) is a ``ValueError``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec

from jaxprune.core.select import num_pruned, smallest_mask, smallest_mask_sharded
from jaxprune.core.sparsity import NM, Target
from jaxprune.methods import statistics
from jaxprune.methods.base import Method, check_kernel, check_target, register_method
from jaxprune.methods.statistics import HESSIAN, LinearStats
from jaxprune.sharding import Layout

_PRECISION = lax.Precision.HIGHEST
_RETRIES = 4
# The first retry's damping when the caller asked for none (0 × 10 would never change anything).
_RETRY_BASE = 1e-3


def _inverse_hessian_factor(
    hessian: jax.Array, percdamp: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The upper Cholesky factor of ``(H + damp·I)⁻¹``, whether it is finite, the damping used."""
    d_in = hessian.shape[0]
    eye = jnp.eye(d_in, dtype=jnp.float32)
    mean_diag = jnp.mean(jnp.diagonal(hessian))

    def attempt(state):
        tries, _, _, _ = state
        damping = jnp.where(
            tries == 0,
            percdamp,
            jnp.maximum(percdamp, _RETRY_BASE) * 10.0 ** tries.astype(jnp.float32),
        )
        lower = jnp.linalg.cholesky(hessian + (damping * mean_diag) * eye)
        inverse = jax.scipy.linalg.cho_solve((lower, True), eye)
        upper = jnp.linalg.cholesky(inverse).T
        finite = jnp.all(jnp.isfinite(upper)) & jnp.all(jnp.diagonal(upper) > 0)
        return tries + 1, upper, finite, damping

    def failed(state):
        tries, _, finite, _ = state
        return ~finite & (tries <= _RETRIES)

    init = (jnp.int32(0), jnp.zeros_like(hessian), jnp.bool_(False), jnp.float32(percdamp))
    _, upper, finite, damping = lax.while_loop(failed, attempt, init)
    return upper, finite, damping


@functools.partial(jax.jit, static_argnames=("blocksize", "nm", "select"))
def _solve(
    kernel: jax.Array,
    hessian: jax.Array,
    block_counts: jax.Array,
    percdamp: jax.Array,
    *,
    blocksize: int,
    nm: tuple[int, int] | None,
    select: Callable[[jax.Array, jax.Array], jax.Array] = smallest_mask,
):
    """The compiled solver; ``block_counts[b]`` = weights to prune in block ``b`` (unstructured).

    ``select(scores, k)`` marks the ``k`` smallest of an unstructured block's scores. Output
    columns are otherwise independent, so :func:`prune_kernel_sharded` runs this function on a
    slice of the columns inside ``shard_map`` with a ``select`` that counts across the slices.
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
    upper, finite, damping = _inverse_hessian_factor(h, percdamp)

    # Padding inputs: zero weights and an identity block of U, so they neither receive nor send
    # any update (U is block diagonal between real and padding inputs).
    pad = padded - d_in
    upper = jnp.pad(upper, ((0, pad), (0, pad)))
    upper = upper.at[jnp.arange(d_in, padded), jnp.arange(d_in, padded)].set(1.0)
    w = jnp.pad(w, ((0, pad), (0, 0)))
    real = jnp.arange(padded) < d_in

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
            p1 = select(scores.T, block_counts[b]).T
            w1, err1, p1 = lax.fori_loop(0, blocksize, column_step, (w1, zeros, p1))
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
                return lax.fori_loop(first, first + m, column_step, (w1, err1, p1))

            init = (w1, zeros, jnp.zeros(w1.shape, jnp.bool_))
            w1, err1, p1 = lax.fori_loop(0, blocksize // m, group_step, init)

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


def prune_kernel(
    kernel: jax.Array,
    hessian: jax.Array,
    target: Target,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[jax.Array, jax.Array]:
    """Prunes one ``(in, out)`` kernel with SparseGPT.

    Args:
      kernel: the layer's weights, Flax layout ``(in, out)``, any float dtype (solved in float32).
      hessian: ``(in, in)`` ``H = (2/N) Σ x xᵀ`` of the layer's inputs
        (:func:`jaxprune.methods.statistics.hessian`).
      target: ``Unstructured(s)`` or ``NM(n, m)`` (``in`` and ``blocksize`` multiples of ``m``).
      blocksize: inputs per block of the lazy batch update (clamped to ``in``).
      percdamp: diagonal damping as a fraction of ``mean(diag H)``.

    Returns:
      ``(pruned kernel in the kernel's dtype, bool keep mask)``.

    Raises:
      ValueError: bad shapes or options, or a Hessian that no damping makes positive definite.
      Called under an outer ``jit`` the last check cannot run; the outputs are then NaN instead.
    """
    kernel, hessian, counts, blocksize, nm = solver_inputs(
        kernel, hessian, target, blocksize=blocksize, percdamp=percdamp
    )
    new_kernel, keep, finite, damping = _solve(
        kernel, hessian, counts, jnp.float32(percdamp), blocksize=blocksize, nm=nm
    )
    check_solution(finite, damping, percdamp)
    return new_kernel, keep


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


def check_solution(finite: jax.Array, damping: jax.Array, percdamp: float) -> None:
    """Raises for a Hessian no damping repaired; warns when more damping than asked was needed.

    Under an outer ``jit`` (``finite`` a tracer) nothing can be checked.
    """
    if isinstance(finite, jax.core.Tracer):
        return
    if not bool(finite):
        raise ValueError(
            "sparsegpt: the damped Hessian is not positive definite even with damping "
            f"{float(damping):g}·mean(diag H); check it for NaN/inf values"
        )
    if float(damping) != np.float32(percdamp):
        warnings.warn(
            f"sparsegpt: Cholesky failed with percdamp={percdamp:g}; solved with "
            f"percdamp={float(damping):g}",
            RuntimeWarning,
            stacklevel=3,
        )


def solve(
    kernel: jax.Array,
    stats: LinearStats,
    target: Target,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[jax.Array, jax.Array]:
    """The method interface: :func:`prune_kernel` with the Hessian of ``stats``."""
    return prune_kernel(kernel, _hessian_of(stats), target, blocksize=blocksize, percdamp=percdamp)


@functools.cache
def _select_over(axes: tuple[str, ...]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    # One function object per axes, so that the compiled solver (which takes the selection as a
    # static argument) is reused across kernels.
    return functools.partial(smallest_mask_sharded, axis_name=axes)


@functools.cache
def _sharded_solver(
    mesh: Mesh, axes: tuple[str, ...], blocksize: int, nm: tuple[int, int] | None
) -> Callable:
    columns = PartitionSpec(None, axes)
    solver = functools.partial(_solve, blocksize=blocksize, nm=nm, select=_select_over(axes))
    # check_vma is off: the solver's loops start some carries from constants (the same on every
    # device) that become per-device values, which the check rejects; the specs below state what
    # the program computes.
    return jax.jit(
        jax.shard_map(
            solver,
            mesh=mesh,
            in_specs=(columns, PartitionSpec(), PartitionSpec(), PartitionSpec()),
            out_specs=(columns, columns, PartitionSpec(), PartitionSpec()),
            check_vma=False,
        )
    )


def prune_kernel_sharded(
    kernel: jax.Array,
    hessian: jax.Array,
    target: Target,
    layout: Layout,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[jax.Array, jax.Array]:
    """:func:`prune_kernel` with the output columns split over the devices of ``layout``.

    The Cholesky factor of ``H⁻¹`` is computed on every device from the replicated Hessian, each
    device sweeps its own columns, and the unstructured per-block mask stays exactly the
    single-device one through :func:`jaxprune.core.select.smallest_mask_sharded` (N:M masks are
    chosen per column, with no communication). The result equals the single-device solve (the
    same masks; weights up to float rounding of the per-device matrix products).

    Args:
      kernel: ``(in, out)`` weights (any placement).
      hessian: ``(in, in)`` float32 Hessian of the layer's inputs (replicated on every device).
      target: ``Unstructured(s)`` or ``NM(n, m)``.
      layout: the mesh; columns go over :meth:`jaxprune.sharding.Layout.solver_axes`.
      blocksize, percdamp: as in :func:`prune_kernel`.

    Returns:
      ``(pruned kernel, keep mask)``, both split by columns over the solver axes.
    """
    kernel, hessian, counts, blocksize, nm = solver_inputs(
        kernel, hessian, target, blocksize=blocksize, percdamp=percdamp
    )
    axes = layout.solver_axes(kernel.shape[1])
    if axes:
        solver = _sharded_solver(layout.mesh, axes, blocksize, nm)
    else:
        solver = functools.partial(_solve, blocksize=blocksize, nm=nm)
    new_kernel, keep, finite, damping = solver(kernel, hessian, counts, jnp.float32(percdamp))
    check_solution(finite, damping, percdamp)
    return new_kernel, keep


def solve_sharded(
    kernel: jax.Array,
    stats: LinearStats,
    target: Target,
    layout: Layout,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[jax.Array, jax.Array]:
    """:func:`solve` for a kernel split by output columns over ``layout``'s mesh.

    See :func:`prune_kernel_sharded`; the result equals :func:`solve`'s.
    """
    return prune_kernel_sharded(
        kernel, _hessian_of(stats), target, layout, blocksize=blocksize, percdamp=percdamp
    )


def _hessian_of(stats: LinearStats | None) -> jax.Array:
    if stats is None:
        raise ValueError("sparsegpt needs input statistics with a Hessian (statistics.HESSIAN)")
    return statistics.hessian(stats)


OPTIONS = {"blocksize": 128, "percdamp": 0.01}

METHOD = register_method(
    Method("sparsegpt", solve, statistics=HESSIAN, options=OPTIONS, solve_sharded=solve_sharded)
)
