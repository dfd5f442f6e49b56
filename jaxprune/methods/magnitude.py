"""Magnitude pruning: drop the weights of smallest ``|W|``, with no calibration data.

``Unstructured(s)`` removes exactly ⌊s·size⌋ weights of the whole layer (one threshold per layer,
ties broken by position; any kernel shape); ``NM(n, m)`` keeps the ``n`` largest of every ``m``
consecutive inputs of each output channel of a 2-D ``(in, out)`` kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.methods.base import register_method
from jaxprune.methods.scored import scored_method


def scores(kernel: jax.Array, stats: object = None) -> jax.Array:
    """``|W|`` in float32; ``stats`` is ignored (magnitude needs no calibration inputs)."""
    del stats
    return jnp.abs(kernel.astype(jnp.float32))


METHOD = register_method(scored_method("magnitude", scores, selection="layer"))
solve = METHOD.solve
