"""Linear centred kernel alignment between two representations of the same examples.

Kornblith et al. 2019 ("Similarity of Neural Network Representations Revisited"), eq. for linear
CKA on centred features ``X (n, p)``, ``Y (n, q)``::

    CKA(X, Y) = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F)

It is 1 for identical representations and invariant to orthogonal transforms and isotropic
scaling of either side (not to arbitrary invertible maps). Computed in float32 on centred
features with full-precision matmuls; the feature form costs ``O(n·p·q)`` and never builds the
``n × n`` Gram matrices.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["linear_cka", "model_cka", "representations"]


@jax.jit
def _cka(x: jax.Array, y: jax.Array) -> jax.Array:
    x = x - jnp.mean(x, axis=0)
    y = y - jnp.mean(y, axis=0)
    dot = lambda a, b: jnp.matmul(a.T, b, precision=jax.lax.Precision.HIGHEST)
    cross = jnp.sum(dot(y, x) ** 2)
    return cross / (jnp.linalg.norm(dot(x, x)) * jnp.linalg.norm(dot(y, y)))


def linear_cka(x: jax.Array | np.ndarray, y: jax.Array | np.ndarray) -> float:
    """Linear CKA of ``x`` and ``y``: rows are the same examples; trailing axes are flattened.

    Raises:
      ValueError: different numbers of examples, fewer than two, or a constant representation.
    """
    x = jnp.asarray(x, jnp.float32).reshape(len(x), -1)
    y = jnp.asarray(y, jnp.float32).reshape(len(y), -1)
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(
            f"need the same >= 2 examples on both sides, got {x.shape[0]}, {y.shape[0]}"
        )
    if float(jnp.max(jnp.std(x, 0))) == 0.0 or float(jnp.max(jnp.std(y, 0))) == 0.0:
        raise ValueError("a representation is constant over the examples: CKA is undefined")
    return float(_cka(x, y))


def representations(
    model: Any,
    params: Any,
    stats: Any,
    images: np.ndarray,
    tap: str | None = None,
    batch_size: int = 500,
) -> np.ndarray:
    """``(n, features)`` of ``images``: the logits, or a tap of ``model.capture`` (e.g.
    ``"convs/2:act"``, a channel group's activation), flattened per example.

    Raises:
      ValueError: a tap the model does not record (the message lists them).
    """
    out = []
    for start in range(0, len(images), batch_size):
        x = jnp.asarray(images[start : start + batch_size])
        logits, taps = _capture(model, params, stats, x)
        if tap is None:
            out.append(np.asarray(logits))
            continue
        if tap not in taps:
            raise ValueError(f"no tap {tap!r}; taps: {sorted(taps)}")
        out.append(np.asarray(taps[tap]).reshape(len(x), -1))
    return np.concatenate(out)


@functools.partial(jax.jit, static_argnums=0)
def _capture(model, params, stats, x):
    return model.capture(params, stats, x)


def model_cka(
    model: Any,
    solution_a: tuple[Any, Any],
    solution_b: tuple[Any, Any],
    images: np.ndarray,
    tap: str | None = None,
) -> float:
    """Linear CKA between two solutions' representations (``tap``, default the logits) of
    ``images``. The solutions may be of different widths (the features are compared, not
    weights), but ``model`` must apply to both: pass the same architecture."""
    x = representations(model, *solution_a, images, tap)
    y = representations(model, *solution_b, images, tap)
    return linear_cka(x, y)
