"""RIA: relative importance and activations (Zhang et al., ICLR 2024, "Plug-and-Play").

A weight matters if it is large *relative to the other weights of its output and of its input*,
and if its input feature is active:

    RIA_ij = (|W_ij| / Σ_j' |W_ij'| + |W_ij| / Σ_i' |W_i'j|) · ‖X_j‖₂^a            (eq. 3, a = 0.5)

in the paper's ``(out, in)`` notation (row ``i`` an output, column ``j`` an input). In the Flax
layout ``(in, out)`` the first sum runs over a kernel column and the second over a kernel row.

Selection (option ``selection``), as the reference ``prune_ria``:

* ``"layer"`` (the default, the reference's without ``--per_outneuron``): one threshold for the
  whole layer, exactly ⌊s·size⌋ weights removed (ties broken by position). The reference keeps
  the weights scoring above its sorted ``[⌊s·size⌋]``-th value, so it removes one more (plus
  ties); the difference is one weight per layer.
* ``"output"`` (the reference's ``--per_outneuron``, "Wanda's tactic"): every output loses
  exactly ⌊s·in⌋ weights (ties broken by input index).

``NM(n, m)`` keeps the ``n`` best of every ``m`` consecutive inputs either way. The reference
scales ``‖X_j‖²`` by one constant per layer, which changes no ranking, so the raw sums are used.
Its optional channel reallocation and permutation for N:M are not included.

An output or input whose weights are all zero has no relative importance (0/0); its entries score
0 there instead of NaN.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxprune.methods.base import check_sq_norms, register_method
from jaxprune.methods.scored import scored_method
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


def _score(kernel: jax.Array, stats: LinearStats, alpha: jax.Array) -> jax.Array:
    return scores(kernel, stats.sq_norms, alpha)


def _check(kernel, stats, options) -> None:
    check_sq_norms(kernel, stats, "ria")
    alpha = options["alpha"]
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"ria's alpha must be a finite number >= 0, got {alpha!r}")


METHOD = register_method(
    scored_method(
        "ria",
        _score,
        statistics=SQ_NORMS,
        options={"alpha": 0.5, "selection": "layer"},
        check=_check,
    )
)
solve = METHOD.solve
