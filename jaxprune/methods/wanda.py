"""Wanda: prune by ``|W_ij| · ‖X_i‖₂`` per output channel (Sun et al., 2023, eq. 1).

In the Flax layout ``(in, out)`` the input axis is 0, so ``X_i`` is input feature ``i`` and one
output channel is the column ``kernel[:, j]``. As in the reference ``prune_wanda``, every output
channel loses exactly ⌊s·in⌋ weights (the smallest scores, ties broken by input index as a stable
sort does), and ``NM(n, m)`` keeps the ``n`` best of every ``m`` consecutive inputs. The reference
scales ``‖X_i‖²`` by one constant per layer, which changes no ranking, so the raw sums are used.
The selection is :func:`~jaxprune.methods.base.scored_method`'s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.methods.base import check_sq_norms, register_method
from jaxprune.methods.scored import scored_method
from jaxprune.methods.statistics import SQ_NORMS, LinearStats


def scores(kernel: jax.Array, sq_norms: jax.Array) -> jax.Array:
    """Wanda importance ``|W_ij| · ‖X_i‖₂`` (float32, the kernel's shape)."""
    return jnp.abs(kernel.astype(jnp.float32)) * jnp.sqrt(sq_norms.astype(jnp.float32))[:, None]


def _score(kernel: jax.Array, stats: LinearStats) -> jax.Array:
    return scores(kernel, stats.sq_norms)


def _check(kernel, stats, options) -> None:
    check_sq_norms(kernel, stats, "wanda")


METHOD = register_method(
    scored_method("wanda", _score, statistics=SQ_NORMS, selection="output", check=_check)
)
solve = METHOD.solve
