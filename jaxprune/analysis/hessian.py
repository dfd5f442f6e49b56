"""Hutchinson's estimator of a Hessian's trace: ``tr(H) = E[vᵀ H v]`` for Rademacher ``v``.

Each sample is one Hessian-vector product, forward-over-reverse (``jax.jvp`` of ``jax.grad``),
so the Hessian is never formed. With ``v`` of independent ±1 entries the estimate is unbiased and
its variance is ``2 Σ_{i≠j} H_ij²`` (the diagonal contributes none: a diagonal Hessian is exact
from one sample). The trace of a network's loss Hessian is the sharpness measure of the
three-regime analysis (Zhou et al. 2023; PyHessian, Yao et al. 2020).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["HutchinsonResult", "hutchinson_trace", "loss_hessian_trace"]


@dataclasses.dataclass(frozen=True)
class HutchinsonResult:
    """``samples``: every ``vᵀ H v``; ``trace`` their mean, ``stderr`` its standard error."""

    samples: np.ndarray

    @property
    def trace(self) -> float:
        return float(np.mean(self.samples))

    @property
    def stderr(self) -> float:
        n = len(self.samples)
        return float(np.std(self.samples, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def _rademacher(key: jax.Array, params: Any) -> Any:
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    signs = [
        jax.random.rademacher(k, jnp.shape(x), jnp.float32).astype(jnp.result_type(x))
        for k, x in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, signs)


def hutchinson_trace(
    fn: Callable[[Any], jax.Array], params: Any, samples: int = 100, seed: int = 0
) -> HutchinsonResult:
    """Estimates ``tr ∇²fn(params)`` (all leaves of the ``params`` pytree together).

    Args:
      fn: a scalar function of the params pytree (twice differentiable).
      params: where the Hessian is taken.
      samples: Rademacher vectors (one Hessian-vector product each).
      seed: of the vectors (deterministic).

    Raises:
      ValueError: ``samples < 1``.
    """
    if samples < 1:
        raise ValueError(f"need at least one sample, got {samples}")
    quad = jax.jit(functools.partial(_quadratic_form, fn))
    return _run(lambda key: quad(params, key), samples, seed)


def _quadratic_form(fn: Callable[[Any], jax.Array], params: Any, key: jax.Array) -> jax.Array:
    """``vᵀ ∇²fn(params) v`` for the Rademacher ``v`` of ``key`` (one forward-over-reverse HVP)."""
    v = _rademacher(key, params)
    _, hv = jax.jvp(jax.grad(fn), (params,), (v,))
    terms = jax.tree.map(lambda a, b: jnp.sum(a.astype(jnp.float32) * b), v, hv)
    return sum(jax.tree.leaves(terms))


def _run(quad: Callable[[jax.Array], jax.Array], samples: int, seed: int) -> HutchinsonResult:
    keys = jax.random.split(jax.random.key(seed), samples)
    return HutchinsonResult(np.asarray([float(quad(k)) for k in keys]))


def _mean_loss(model: Any, stats: Any, x: jax.Array, y: jax.Array, params: Any) -> jax.Array:
    logits, _ = model.apply(params, stats, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@functools.partial(jax.jit, static_argnums=0)
def _loss_quadratic_form(model, params, stats, x, y, key):
    return _quadratic_form(functools.partial(_mean_loss, model, stats, x, y), params, key)


def loss_hessian_trace(
    model: Any,
    params: Any,
    stats: Any,
    images: np.ndarray,
    labels: np.ndarray,
    samples: int = 20,
    seed: int = 0,
) -> HutchinsonResult:
    """Hutchinson trace of the mean cross-entropy's Hessian on ``(images, labels)`` with respect
    to the params, BatchNorm in inference mode (the statistics held fixed). Compiled once per
    model and shapes."""
    if samples < 1:
        raise ValueError(f"need at least one sample, got {samples}")
    x, y = jnp.asarray(images), jnp.asarray(labels)
    return _run(lambda key: _loss_quadratic_form(model, params, stats, x, y, key), samples, seed)
