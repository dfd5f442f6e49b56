"""Pieces shared by the optimal-brain-surgeon solvers (SparseGPT, and SparseLLM through it).

The upper Cholesky factor of the damped inverse Hessian, computed inside the compiled program with
automatic extra damping when float32 Cholesky fails, and the host-side check of what came back.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxprune.methods.linalg import cho_solve, cholesky

_RETRIES = 4
# The first retry's damping when the caller asked for none (0 × 10 would never change anything).
_RETRY_BASE = 1e-3


def inverse_hessian_factor(
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
        lower = cholesky(hessian + (damping * mean_diag) * eye)
        inverse = cho_solve(lower, eye)
        upper = cholesky(inverse).T
        finite = jnp.all(jnp.isfinite(upper)) & jnp.all(jnp.diagonal(upper) > 0)
        return tries + 1, upper, finite, damping

    def failed(state):
        tries, _, finite, _ = state
        return ~finite & (tries <= _RETRIES)

    init = (jnp.int32(0), jnp.zeros_like(hessian), jnp.bool_(False), jnp.float32(percdamp))
    _, upper, finite, damping = lax.while_loop(failed, attempt, init)
    return upper, finite, damping


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


__all__ = ["check_solution", "inverse_hessian_factor"]
