"""ALPS: ADMM with a penalty schedule, then conjugate gradients on the final support.

Meng, Behdin, Wang & Mazumder, "ALPS: Improved Optimization for Highly Sparse One-Shot Pruning
for Large Language Models" (NeurIPS 2024), following the authors' ``ALPS_admm``. For one layer
with inputs ``X`` and dense weights ``W`` (Flax ``(in, out)``), ALPS solves

    min ‖XW − XŴ‖²  subject to  Ŵ having the target's support (exactly ``k`` non-zeros),

1. on a normalised problem: ``H = XᵀX`` is damped (SparseGPT's rule: dead inputs get ``H_ii = 1``
   and zero weights, then ``percdamp · mean(diag H)`` on the diagonal) and scaled to a unit
   diagonal, ``G = D⁻¹HD⁻¹`` with ``D = diag(√H_ii + 1e-8)``; the weights become ``B₀ = DW`` and
   the target ``C = G B₀``. The scale of ``H`` (sum or mean over tokens) changes nothing;
2. by ADMM on ``min ½ tr(BᵀGB) − tr(BᵀC)`` split as ``B = D_s`` with ``D_s`` sparse::

       B   = (G + ρI)⁻¹ (C − V + ρ D_s)
       D_s = P(B + V/ρ)                 (exact-count projection: the k largest |·|)
       V   = V + ρ (B − D_s)

   ``P`` keeps the ``k`` largest entries of the whole layer (unstructured, as the paper does;
   ``k`` = the library's exact count ``size − ⌊s·size⌋``), or the ``n`` largest of every ``m``
   consecutive inputs of each output (N:M). ``(G + ρI)⁻¹ = Q diag(1/(λ + ρ)) Qᵀ`` from one
   eigendecomposition of ``G``;
3. the penalty schedule, every ``update_iter`` iterations, from the support change ``c`` (entries
   whose zero/non-zero state changed since the last check) relative to ``k``: ``c/k > 0.1``:
   ``ρ ×= 1.3``; ``> 0.005``: ``ρ ×= 1.2``; otherwise, once ρ has started growing, ``ρ ×= 1.1``
   while the support still moves and stop when it does not; before that, ``ρ /= 5`` (restarting
   from ``B₀``, ``P(B₀)``, ``V = 0`` when the support moved). ρ is capped at 10⁶. The run also
   stops after ``switch_iter`` iterations once ``c/k < 0.0003``, and after ``max_iter``;
4. the weights on the final support ``P(B)`` are refit by conjugate gradients on ``G`` restricted
   to the support (each output column its own system), from ``P(B)``, for at most ``cg_iter``
   iterations. The unit-diagonal scaling of step 1 is the preconditioner (Jacobi); the authors'
   CG runs on the scaled system with the identity.

Defaults are the authors' (``rho=0.1``, ``max_iter=300``, ``update_iter=3``, ``switch_iter=30``,
CG ``rtol=1e-4`` for at most 10 iterations). Departures, all small: the selection breaks ties by
position and counts ``k`` like every other method of the library; dead inputs are handled as
SparseGPT does; the support is the projection's mask (not ``B != 0``); CG stops when every
column's residual on the support is below ``cg_rtol`` times its right-hand side (the authors test
the full residual, which a sparse solution never meets, so theirs always runs ``maxiter``); the
eigendecomposition is float32 (theirs float64).

Everything after the host-side checks is one compiled program per shape (``lax.while_loop`` for
ADMM and CG). Memory: about ``4 · (3·in² + 9·in·out)`` bytes (``G``, its eigenvectors and
``(G + ρI)⁻¹``; ``B₀``, ``C``, ``B``, ``D_s``, ``V``, ``P(B₀)``, the selection keys and two CG
temporaries). There is no ``solve_sharded``: every step is a whole-array ``jnp`` operation
(the unstructured projection is one selection over the layer), so on a mesh XLA partitions
``solve`` itself; the eigendecomposition is replicated.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxprune.methods.statistics as statistics
from jaxprune.core.select import nm_prune_mask, num_pruned, smallest_mask
from jaxprune.core.sparsity import NM, Target
from jaxprune.methods.base import Method, check_kernel, check_target, register_method
from jaxprune.methods.statistics import HESSIAN, LinearStats

OPTIONS = {
    "rho": 0.1,
    "max_iter": 300,
    "update_iter": 3,
    "switch_iter": 30,
    "cg_iter": 10,
    "cg_rtol": 1e-4,
    "percdamp": 0.01,
}
"""The options of :func:`solve` with the authors' defaults."""

_HIGHEST = lax.Precision.HIGHEST
_RHO_MAX = 1e6


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=_HIGHEST)


class AdmmState(NamedTuple):
    """The ADMM iterate (the normalised problem), as :func:`admm` returns it."""

    iteration: jax.Array
    rho: jax.Array
    b: jax.Array
    d: jax.Array
    v: jax.Array
    inverse: jax.Array
    pruned: jax.Array
    growing: jax.Array
    stop: jax.Array


@jax.jit
def normalized_problem(
    kernel: jax.Array, hessian: jax.Array, percdamp: float | jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(G, B₀, scale)`` of step 1: the damped unit-diagonal Hessian, the scaled weights, ``D``."""
    h = hessian.astype(jnp.float32)
    w = kernel.astype(jnp.float32)
    diag = jnp.diagonal(h)
    dead = diag == 0
    index = jnp.arange(h.shape[0])
    h = h.at[index, index].set(jnp.where(dead, 1.0, diag))
    w = jnp.where(dead[:, None], 0.0, w)
    h = h.at[index, index].add(percdamp * jnp.mean(jnp.diagonal(h)))
    scale = jnp.sqrt(jnp.diagonal(h)) + 1e-8
    g = h / scale[:, None] / scale[None, :]
    return g, w * scale[:, None], scale


def project(
    values: jax.Array, keep_count: jax.Array, nm: tuple[int, int] | None
) -> tuple[jax.Array, jax.Array]:
    """``(P(values), keep mask)``: the ``keep_count`` largest ``|·|`` of the layer, or N:M."""
    squares = values * values
    if nm is None:
        keep = ~smallest_mask(squares, values.size - keep_count)
    else:
        keep = ~nm_prune_mask(squares, *nm)
    return jnp.where(keep, values, 0.0), keep


def _inverse(eigvals: jax.Array, eigvecs: jax.Array, rho: jax.Array) -> jax.Array:
    return _mm(eigvecs * (1.0 / (eigvals + rho)), eigvecs.T)


def _schedule(state: AdmmState, keep, b0, d0, eig, keep_count, switch_iter) -> AdmmState:
    """Step 3, run every ``update_iter`` iterations."""
    pruned = ~keep
    change = jnp.sum(pruned != state.pruned).astype(jnp.float32)
    frac = change / keep_count.astype(jnp.float32)
    big, mid, moved = frac > 0.1, frac > 0.005, change > 0.5
    rho = state.rho
    rho = jnp.where(
        big,
        rho * 1.3,
        jnp.where(
            mid,
            rho * 1.2,
            jnp.where(state.growing, jnp.where(moved, rho * 1.1, rho), rho / 5.0),
        ),
    )
    rho = jnp.minimum(rho, _RHO_MAX)
    restart = moved & ~mid & ~state.growing
    settled = ~moved & state.growing
    late = (state.iteration - 1 >= switch_iter) & (frac < 0.0003)
    return AdmmState(
        state.iteration,
        rho,
        jnp.where(restart, b0, state.b),
        jnp.where(restart, d0, state.d),
        jnp.where(restart, 0.0, state.v),
        _inverse(*eig, rho),
        pruned,
        state.growing | mid,
        settled | late,
    )


@functools.partial(jax.jit, static_argnames=("nm",))
def admm(
    g: jax.Array,
    b0: jax.Array,
    keep_count: jax.Array,
    rho: jax.Array,
    max_iter: jax.Array,
    update_iter: jax.Array,
    switch_iter: jax.Array,
    *,
    nm: tuple[int, int] | None,
) -> AdmmState:
    """Steps 2–3 on the normalised problem ``(G, B₀)``; the state when the schedule stops."""
    c = _mm(g, b0)
    eigvals, eigvecs = jnp.linalg.eigh(g)
    d0, keep0 = project(b0, keep_count, nm)
    rho = jnp.asarray(rho, jnp.float32)

    def step(state: AdmmState) -> AdmmState:
        b = _mm(state.inverse, c - state.v + state.rho * state.d)
        d, keep = project(b + state.v / state.rho, keep_count, nm)
        v = state.v + state.rho * (b - d)
        state = state._replace(iteration=state.iteration + 1, b=b, d=d, v=v)
        return lax.cond(
            state.iteration % update_iter == 0,
            lambda s: _schedule(s, keep, b0, d0, (eigvals, eigvecs), keep_count, switch_iter),
            lambda s: s,
            state,
        )

    init = AdmmState(
        jnp.int32(0),
        rho,
        b0,
        d0,
        jnp.zeros_like(b0),
        _inverse(eigvals, eigvecs, rho),
        ~keep0,
        jnp.bool_(False),
        jnp.bool_(False),
    )
    return lax.while_loop(lambda s: (s.iteration < max_iter) & ~s.stop, step, init)


@jax.jit
def conjugate_gradient(
    g: jax.Array, c: jax.Array, keep: jax.Array, x0: jax.Array, iters: jax.Array, rtol: jax.Array
) -> jax.Array:
    """Step 4: CG on ``G_SS x_S = c_S`` for every column, ``S`` its support in ``keep``."""
    mask = keep.astype(jnp.float32)
    r = (c - _mm(g, x0)) * mask
    goal = rtol * jnp.linalg.norm(c * mask, axis=0)

    def running(carry):
        k, _, r, _, _ = carry
        return (k < iters) & ~jnp.all(jnp.linalg.norm(r, axis=0) <= goal)

    def body(carry):
        k, x, r, p, rr = carry
        ap = _mm(g, p)
        den = jnp.sum(p * ap, axis=0)
        alpha = rr / jnp.where(den == 0, 1e-8, den)
        x = x + alpha * p
        r = (r - alpha * ap) * mask
        rr_new = jnp.sum(r * r, axis=0)
        p = r + (rr_new / jnp.where(rr == 0, 1e-8, rr)) * p
        return k + 1, x, r, p, rr_new

    init = (jnp.int32(0), x0, r, r, jnp.sum(r * r, axis=0))
    return lax.while_loop(running, body, init)[1]


@functools.partial(jax.jit, static_argnames=("nm",))
def _finish(g, b0, scale, b, count, cg_iter, cg_rtol, dtype_like, *, nm):
    start, keep = project(b, count, nm)
    refit = conjugate_gradient(g, _mm(g, b0), keep, start, cg_iter, cg_rtol)
    return jnp.where(keep, refit / scale[:, None], 0.0).astype(dtype_like.dtype), keep


def keep_count(target: Target, shape: tuple[int, int]) -> tuple[int, tuple[int, int] | None]:
    """``(non-zeros to keep, (n, m) or None)`` for ``target`` on an ``(in, out)`` kernel."""
    size = shape[0] * shape[1]
    if isinstance(target, NM):
        if shape[0] % target.m:
            raise ValueError(
                f"alps {target} needs the input dimension ({shape[0]}) to be a multiple of "
                f"{target.m}; use an unstructured target for this layer"
            )
        return size // target.m * target.n, (target.n, target.m)
    return size - num_pruned(target.sparsity, size), None


def check_options(
    rho: float, max_iter: int, update_iter: int, switch_iter: int, cg_iter: int, cg_rtol: float
) -> None:
    """``ValueError`` naming the first option out of range."""
    counts = {
        "max_iter": max_iter,
        "update_iter": update_iter,
        "switch_iter": switch_iter,
        "cg_iter": cg_iter,
    }
    for name, value in counts.items():
        if not isinstance(value, int | np.integer) or value < (1 if name == "update_iter" else 0):
            raise ValueError(f"alps option {name} must be a non-negative integer, got {value!r}")
    for name, value in {"rho": rho, "cg_rtol": cg_rtol}.items():
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"alps option {name} must be a finite number > 0, got {value!r}")


def prune_kernel(
    kernel: jax.Array,
    hessian: jax.Array,
    target: Target,
    **options: float,
) -> tuple[jax.Array, jax.Array, int]:
    """Prunes one ``(in, out)`` kernel with ALPS.

    Args:
      kernel: the layer's weights, Flax layout ``(in, out)``, any float dtype (solved in float32).
      hessian: ``(in, in)`` ``XᵀX`` up to scale (the HESSIAN statistic's ``(2/N) Σ x xᵀ``).
      target: ``Unstructured(s)`` (exactly ``⌊s·size⌋`` zeros in the layer) or ``NM(n, m)``.
      **options: any of :data:`OPTIONS` (``rho``, ``max_iter``, ``update_iter``, ``switch_iter``,
        ``cg_iter``, ``cg_rtol``, ``percdamp``), defaults from the paper's code.

    Returns:
      ``(pruned kernel in the kernel's dtype, bool keep mask, ADMM iterations run)``.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"alps has no options {unknown}; known options: {sorted(OPTIONS)}")
    opts = {**OPTIONS, **options}
    check_target(target, "alps")
    kernel = jnp.asarray(kernel)
    check_kernel(kernel, "alps")
    if hessian.shape != (kernel.shape[0],) * 2:
        raise ValueError(
            f"alps needs an (in, in) Hessian for a kernel of shape {kernel.shape}, got "
            f"{hessian.shape}; kernels must be in Flax (in, out) layout"
        )
    if not (np.isfinite(opts["percdamp"]) and opts["percdamp"] >= 0):
        raise ValueError(f"percdamp must be a finite number >= 0, got {opts['percdamp']!r}")
    check_options(
        *(opts[k] for k in ("rho", "max_iter", "update_iter", "switch_iter", "cg_iter", "cg_rtol"))
    )
    count, nm = keep_count(target, kernel.shape)
    # Three compiled programs (the ADMM loop shared by every call of one kind of target), not one:
    # each exact-count selection costs seconds to compile.
    g, b0, scale = normalized_problem(kernel, jnp.asarray(hessian), jnp.float32(opts["percdamp"]))
    count = jnp.int32(count)
    state = admm(
        g,
        b0,
        count,
        jnp.float32(opts["rho"]),
        jnp.int32(opts["max_iter"]),
        jnp.int32(opts["update_iter"]),
        jnp.int32(opts["switch_iter"]),
        nm=nm,
    )
    new, keep = _finish(
        g,
        b0,
        scale,
        state.b,
        count,
        jnp.int32(opts["cg_iter"]),
        jnp.float32(opts["cg_rtol"]),
        jnp.zeros((), kernel.dtype),
        nm=nm,
    )
    if not bool(jnp.all(jnp.isfinite(jnp.where(keep, new, 0)))):
        raise ValueError("alps: the solve gave non-finite weights; check the layer's Hessian")
    return new, keep, int(state.iteration)


def solve(
    kernel: jax.Array, stats: LinearStats, target: Target, **options: float
) -> tuple[jax.Array, jax.Array]:
    """The method interface: :func:`prune_kernel` with the Hessian of ``stats``."""
    if stats is None:
        raise ValueError("alps needs input statistics with a Hessian (statistics.HESSIAN)")
    new, keep, _ = prune_kernel(kernel, statistics.hessian(stats), target, **options)
    return new, keep


METHOD = register_method(Method("alps", solve, statistics=HESSIAN, options=OPTIONS))
