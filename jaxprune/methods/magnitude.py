"""Magnitude pruning: drop the weights of smallest ``|W|``, with no calibration data.

``Unstructured(s)`` removes exactly ⌊s·size⌋ weights of the whole layer (one threshold per layer,
ties broken by position); ``NM(n, m)`` keeps the ``n`` largest of every ``m`` consecutive inputs of
each output channel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxprune.core.select import nm_prune_mask, num_pruned, smallest_mask
from jaxprune.core.sparsity import NM, Target
from jaxprune.methods.base import Method, check_target, register_method


@jax.jit
def _unstructured(kernel: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
    keep = ~smallest_mask(jnp.abs(kernel.astype(jnp.float32)), k)
    return jnp.where(keep, kernel, jnp.zeros_like(kernel)), keep


@functools.partial(jax.jit, static_argnames=("n", "m"))
def _nm(kernel: jax.Array, n: int, m: int) -> tuple[jax.Array, jax.Array]:
    keep = ~nm_prune_mask(jnp.abs(kernel.astype(jnp.float32)), n, m)
    return jnp.where(keep, kernel, jnp.zeros_like(kernel)), keep


def solve(kernel: jax.Array, stats: object, target: Target) -> tuple[jax.Array, jax.Array]:
    """Magnitude-prunes ``kernel``.

    Args:
      kernel: weights of any shape and float dtype; for ``NM`` a 2-D ``(in, out)`` kernel whose
        input dimension is a multiple of ``m``.
      stats: ignored (magnitude needs no calibration inputs); accepted for the method interface.
      target: ``Unstructured(s)`` (per-layer threshold) or ``NM(n, m)`` (along the input axis).

    Returns:
      ``(pruned kernel, keep mask)``; the kernel keeps its dtype, the mask is bool of its shape.
    """
    del stats
    check_target(target, "magnitude")
    kernel = jnp.asarray(kernel)
    if isinstance(target, NM):
        if kernel.ndim != 2:
            raise ValueError(
                f"magnitude N:M needs a 2-D (in, out) kernel, got shape {kernel.shape}"
            )
        return _nm(kernel, target.n, target.m)
    return _unstructured(kernel, jnp.int32(num_pruned(target.sparsity, kernel.size)))


METHOD = register_method(Method("magnitude", solve))
