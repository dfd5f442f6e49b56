"""RIA: relative importance and activations (Zhang et al., ICLR 2024, "Plug-and-Play").

A weight matters if it is large *relative to the other weights of its output and of its input*,
and if its input feature is active:

    RIA_ij = (|W_ij| / Σ_j' |W_ij'| + |W_ij| / Σ_i' |W_i'j|) · ‖X_j‖₂^a            (eq. 3, a = 0.5)

in the paper's ``(out, in)`` notation (row ``i`` an output, column ``j`` an input). In the Flax
layout ``(in, out)`` the first sum runs over a kernel column and the second over a kernel row. As
in the reference ``prune_ria``, each output loses exactly ⌊s·in⌋ weights (the lowest scores, ties
broken by input index), and ``NM(n, m)`` keeps the ``n`` best of every ``m`` consecutive inputs.
The reference scales ``‖X_j‖²`` by one constant per layer, which changes no ranking, so the raw
sums are used. Its optional channel reallocation and permutation for N:M are not included.

An output or input whose weights are all zero has no relative importance (0/0); its entries score
0 there instead of NaN.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from jaxprune.core.select import nm_prune_mask, num_pruned, smallest_mask
from jaxprune.core.sparsity import NM, Target
from jaxprune.methods.base import (
    Method,
    check_kernel,
    check_sq_norms,
    check_target,
    register_method,
)
from jaxprune.methods.statistics import SQ_NORMS, LinearStats


def _relative(magnitude: jax.Array, total: jax.Array) -> jax.Array:
    return jnp.where(total > 0, magnitude / jnp.where(total > 0, total, 1.0), 0.0)


def scores(kernel: jax.Array, sq_norms: jax.Array, alpha: float | jax.Array = 0.5) -> jax.Array:
    """RIA scores of an ``(in, out)`` kernel given its inputs' ``Σ x_j²`` (float32, its shape)."""
    w = jnp.abs(kernel.astype(jnp.float32))
    per_output = _relative(w, jnp.sum(w, axis=0, keepdims=True))
    per_input = _relative(w, jnp.sum(w, axis=1, keepdims=True))
    activation = jnp.sqrt(sq_norms.astype(jnp.float32)) ** alpha
    return (per_output + per_input) * activation[:, None]


@jax.jit
def _per_output(kernel: jax.Array, sq_norms: jax.Array, k: jax.Array, alpha: jax.Array):
    keep = ~smallest_mask(scores(kernel, sq_norms, alpha), k, axis=0)
    return jnp.where(keep, kernel, jnp.zeros_like(kernel)), keep


@functools.partial(jax.jit, static_argnames=("n", "m"))
def _nm(kernel: jax.Array, sq_norms: jax.Array, alpha: jax.Array, n: int, m: int):
    keep = ~nm_prune_mask(scores(kernel, sq_norms, alpha), n, m)
    return jnp.where(keep, kernel, jnp.zeros_like(kernel)), keep


def solve(
    kernel: jax.Array, stats: LinearStats, target: Target, *, alpha: float = 0.5
) -> tuple[jax.Array, jax.Array]:
    """RIA-prunes one ``(in, out)`` kernel.

    Args:
      kernel: the layer's weights, Flax layout ``(in, out)``, any float dtype.
      stats: statistics of the layer's inputs; only ``stats.sq_norms`` (``Σ x_j²``) is read.
      target: ``Unstructured(s)`` (⌊s·in⌋ zeros in every output column) or ``NM(n, m)``.
      alpha: the exponent ``a`` of the activation norm (the paper's 0.5; 0 ignores activations).

    Returns:
      ``(pruned kernel, keep mask)``; the kernel keeps its dtype, the mask is bool of its shape.
    """
    check_target(target, "ria")
    kernel = jnp.asarray(kernel)
    check_kernel(kernel, "ria")
    check_sq_norms(kernel, stats, "ria")
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"ria's alpha must be a finite number >= 0, got {alpha!r}")
    a = jnp.float32(alpha)
    if isinstance(target, NM):
        return _nm(kernel, stats.sq_norms, a, target.n, target.m)
    k = jnp.int32(num_pruned(target.sparsity, kernel.shape[0]))
    return _per_output(kernel, stats.sq_norms, k, a)


METHOD = register_method(Method("ria", solve, statistics=SQ_NORMS, options={"alpha": 0.5}))
