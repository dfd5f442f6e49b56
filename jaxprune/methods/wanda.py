"""Wanda: prune by ``|W_ij| · ‖X_i‖₂`` per output channel (Sun et al., 2023, eq. 1).

In the Flax layout ``(in, out)`` the input axis is 0, so ``X_i`` is input feature ``i`` and one
output channel is the column ``kernel[:, j]``. As in the reference ``prune_wanda``, every output
channel loses exactly ⌊s·in⌋ weights (the smallest scores, ties broken by input index as a stable
sort does), and ``NM(n, m)`` keeps the ``n`` best of every ``m`` consecutive inputs. The reference
scales ``‖X_i‖²`` by one constant per layer, which changes no ranking, so the raw sums are used.
"""

from __future__ import annotations

import functools

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


def scores(kernel: jax.Array, sq_norms: jax.Array) -> jax.Array:
    """Wanda importance ``|W_ij| · ‖X_i‖₂`` (float32, the kernel's shape)."""
    return jnp.abs(kernel.astype(jnp.float32)) * jnp.sqrt(sq_norms.astype(jnp.float32))[:, None]


@jax.jit
def _per_output(kernel: jax.Array, sq_norms: jax.Array, k: jax.Array):
    keep = ~smallest_mask(scores(kernel, sq_norms), k, axis=0)
    return jnp.where(keep, kernel, jnp.zeros_like(kernel)), keep


@functools.partial(jax.jit, static_argnames=("n", "m"))
def _nm(kernel: jax.Array, sq_norms: jax.Array, n: int, m: int):
    keep = ~nm_prune_mask(scores(kernel, sq_norms), n, m)
    return jnp.where(keep, kernel, jnp.zeros_like(kernel)), keep


def solve(kernel: jax.Array, stats: LinearStats, target: Target) -> tuple[jax.Array, jax.Array]:
    """Wanda-prunes one ``(in, out)`` kernel.

    Args:
      kernel: the layer's weights, Flax layout ``(in, out)``, any float dtype.
      stats: statistics of the layer's inputs; only ``stats.sq_norms`` (``Σ x_i²``) is read.
      target: ``Unstructured(s)`` (⌊s·in⌋ zeros in every output column) or ``NM(n, m)``.

    Returns:
      ``(pruned kernel, keep mask)``; the kernel keeps its dtype, the mask is bool of its shape.
    """
    check_target(target, "wanda")
    kernel = jnp.asarray(kernel)
    check_kernel(kernel, "wanda")
    check_sq_norms(kernel, stats, "wanda")
    if isinstance(target, NM):
        return _nm(kernel, stats.sq_norms, target.n, target.m)
    k = jnp.int32(num_pruned(target.sparsity, kernel.shape[0]))
    return _per_output(kernel, stats.sq_norms, k)


METHOD = register_method(Method("wanda", solve, statistics=SQ_NORMS))
