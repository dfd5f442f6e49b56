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
loops over blocks and over inputs are both ``lax.fori_loop`` (the inner one unrolled on GPUs,
where a loop iteration costs a host round trip). Flax kernels are ``(in, out)``: the reference's
columns are our rows.

Kernels that read the same input (q/k/v, gate/up) share its Hessian, so :func:`prune_kernels`
factors it once and sweeps them together as one wide matrix: output columns never interact in the
sweep, and each kernel keeps its own per-block selection (a *segment* of the columns), so the
result is each kernel's own solve, at a third (q/k/v) of the sequential steps.

Two deliberate differences from the reference: an unstructured block prunes exactly ⌊s·count⌋
weights (the reference's ``<=`` threshold takes one more, and ties), and when the damped Cholesky
fails (NaN; float32 on an ill-conditioned ``H``) the damping is retried ×10, up to 4 times, inside
the compiled program, with a warning (a ``percdamp`` of 0 retries from 0.01); a Hessian that no
damping repairs (non-finite) is a ``ValueError``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

import jaxprune.methods.statistics as statistics
from jaxprune.core.select import smallest_mask_sharded
from jaxprune.core.sparsity import Target
from jaxprune.methods.base import Method, register_method
from jaxprune.methods.obs import check_solution
from jaxprune.methods.sparsegpt_sweep import default_unroll, solver_inputs, sweep
from jaxprune.methods.statistics import HESSIAN, LinearStats
from jaxprune.sharding import Layout


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
    new_kernel, keep, finite, damping = sweep(
        kernel,
        hessian,
        counts,
        jnp.float32(percdamp),
        blocksize=blocksize,
        nm=nm,
        unroll=default_unroll(),
    )
    check_solution(finite, damping, percdamp)
    return new_kernel, keep


def prune_kernels(
    kernels: Sequence[jax.Array],
    hessian: jax.Array,
    targets: Sequence[Target],
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> list[tuple[jax.Array, jax.Array]]:
    """:func:`prune_kernel` for several kernels that read the same input, in one sweep.

    The Hessian is factored once and the kernels are swept side by side (see the module
    docstring); each keeps its own per-block selection, so the results are each kernel's own
    solve (up to float rounding of the wider matrix products). Kernels with different kinds of
    target (unstructured and N:M, or two N:M patterns) are solved one by one.

    Returns:
      ``[(pruned kernel, keep mask), ...]`` in the order of ``kernels``.
    """
    if len(kernels) != len(targets) or not kernels:
        raise ValueError(f"need one target per kernel, got {len(kernels)} and {len(targets)}")
    inputs = [
        solver_inputs(k, hessian, t, blocksize=blocksize, percdamp=percdamp)
        for k, t in zip(kernels, targets, strict=True)
    ]
    kinds = {nm for *_, nm in inputs}
    if len(inputs) == 1 or len(kinds) > 1 or len({k.dtype for k, *_ in inputs}) > 1:
        return [
            prune_kernel(k, hessian, t, blocksize=blocksize, percdamp=percdamp)
            for k, t in zip(kernels, targets, strict=True)
        ]
    nm = kinds.pop()
    widths = tuple(int(k.shape[1]) for k, *_ in inputs)
    counts = jnp.stack([c for _, _, c, _, _ in inputs]) if nm is None else inputs[0][2]
    new, keep, finite, damping = sweep(
        jnp.concatenate([k for k, *_ in inputs], axis=1),
        inputs[0][1],
        counts,
        jnp.float32(percdamp),
        blocksize=inputs[0][3],
        nm=nm,
        segments=widths if nm is None else None,
        unroll=default_unroll(),
    )
    check_solution(finite, damping, percdamp)
    cuts = np.cumsum(widths)[:-1]
    return list(zip(jnp.split(new, cuts, axis=1), jnp.split(keep, cuts, axis=1), strict=True))


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


def solve_group(
    kernels: Sequence[jax.Array],
    stats: LinearStats,
    targets: Sequence[Target],
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> list[tuple[jax.Array, jax.Array]]:
    """The method interface for kernels sharing one input: :func:`prune_kernels`."""
    return prune_kernels(
        kernels, _hessian_of(stats), targets, blocksize=blocksize, percdamp=percdamp
    )


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
    solver = functools.partial(sweep, blocksize=blocksize, nm=nm, select=_select_over(axes))
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
        solver = functools.partial(sweep, blocksize=blocksize, nm=nm, unroll=default_unroll())
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
    Method(
        "sparsegpt",
        solve,
        statistics=HESSIAN,
        options=OPTIONS,
        solve_sharded=solve_sharded,
        solve_group=solve_group,
    )
)
