"""Linear mode connectivity: the loss barrier on the straight line between two trained solutions.

``θ(α) = θ_a + α(θ_b − θ_a)`` is evaluated at ``points`` evenly spaced ``α ∈ [0, 1]`` (at least
11). The **barrier** is the largest rise of the loss above the straight line between the
endpoints' losses (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis"; the connectivity metric of Zhou et al. 2023's three regimes)::

    barrier = max_α  L(θ(α)) − [(1 − α) L(θ_a) + α L(θ_b)]

(≥ 0: the endpoints contribute 0), and likewise for the error rate. An interpolated network's
BatchNorm statistics belong to neither endpoint, so they are **recomputed at every point**
(endpoints included) from ``bn_images``, as training mode computes them: one training-mode pass
per batch, the batches pooled exactly (mean of the means; mean of the biased variances plus the
variance of the means, the law of total variance). The first BatchNorm's statistics are exactly
those of all the images; later ones see their inputs normalised with each batch's statistics, as
in training (PyTorch's BatchNorm reset for interpolated networks does the same with running
sums). The model's running-average update is read as a black box: from zero statistics one batch
gives ``(1 − m)·batch``, from unit statistics ``m + (1 − m)·batch``, so the momentum ``m`` is
measured rather than assumed.

Models are anything with ``apply(params, stats, images, train) -> (logits, stats)``:
:class:`~jaxprune.models.vision.VisionModel` and the gated model of
:mod:`jaxprune.structured.gates`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["LmcResult", "barrier", "evaluate_loss", "interpolate", "recompute_batch_stats"]

Params = Any


def interpolate(params_a: Params, params_b: Params, alpha: float) -> Params:
    """``θ_a + α(θ_b − θ_a)`` leaf by leaf; exactly ``θ_a`` at 0 and ``θ_b`` at 1.

    Raises:
      ValueError: the two trees differ in structure or shapes.
    """
    if jax.tree.structure(params_a) != jax.tree.structure(params_b):
        raise ValueError("the two solutions have different params trees (not one architecture)")
    leaves_a, leaves_b = jax.tree.leaves(params_a), jax.tree.leaves(params_b)
    shapes = [(jnp.shape(a), jnp.shape(b)) for a, b in zip(leaves_a, leaves_b, strict=True)]
    if any(a != b for a, b in shapes):
        raise ValueError("the two solutions have leaves of different shapes (prune, don't shrink)")
    if alpha == 0.0:
        return params_a
    if alpha == 1.0:
        return params_b
    return jax.tree.map(lambda a, b: a + alpha * (b - a), params_a, params_b)


@functools.partial(jax.jit, static_argnums=(0,))
def _train_stats(model, params, stats, images):
    return model.apply(params, stats, images, train=True)[1]


def recompute_batch_stats(
    model: Any, params: Params, stats: Params, images: np.ndarray, batch_size: int = 500
) -> Params:
    """BatchNorm statistics of ``params`` over ``images`` (whole batches of ``batch_size``, or
    one batch of all if fewer), each batch through training mode and the batches pooled exactly
    (see the module docstring).

    Raises:
      ValueError: fewer than two images.
    """
    if len(images) < 2 or batch_size < 2:
        raise ValueError(f"BatchNorm needs batches of 2 or more images, got {len(images)} images")
    batch_size = min(batch_size, len(images))
    n = len(images) // batch_size
    if not jax.tree.leaves(stats):
        return stats
    zeros = jax.tree.map(jnp.zeros_like, stats)
    ones = jax.tree.map(jnp.ones_like, stats)
    first = jnp.asarray(images[:batch_size])
    # (1 − m)·batch and m + (1 − m)·batch: the update's momentum m, per leaf, measured.
    low, high = _train_stats(model, params, zeros, first), _train_stats(model, params, ones, first)
    momentum = jax.tree.map(lambda h, lo: h - lo, high, low)
    batches = [low] + [
        _train_stats(
            model, params, zeros, jnp.asarray(images[i * batch_size : (i + 1) * batch_size])
        )
        for i in range(1, n)
    ]
    per_batch = [jax.tree.map(lambda s, m: s / (1.0 - m), b, momentum) for b in batches]
    return _pool(per_batch)


def _pool(per_batch: list[Params]) -> Params:
    """Per-batch ``{mean, var}`` dicts to the whole set's: E[mean]; E[var] + Var[mean]."""

    def pool(node):
        if isinstance(node[0], dict) and set(node[0]) == {"mean", "var"}:
            means = jnp.stack([b["mean"] for b in node])
            var = jnp.mean(jnp.stack([b["var"] for b in node]), 0) + jnp.var(means, 0)
            return {"mean": jnp.mean(means, 0), "var": var}
        if isinstance(node[0], dict):
            return {k: pool([b[k] for b in node]) for k in node[0]}
        if isinstance(node[0], list | tuple):
            return type(node[0])(pool([b[i] for b in node]) for i in range(len(node[0])))
        return jnp.mean(jnp.stack(node), 0)

    return pool(per_batch)


@functools.partial(jax.jit, static_argnums=(0,))
def _loss_hits(model, params, stats, x, y):
    logits, _ = model.apply(params, stats, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
    return jnp.sum(loss), jnp.sum(jnp.argmax(logits, -1) == y)


def evaluate_loss(
    model: Any,
    params: Params,
    stats: Params,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 1000,
) -> tuple[float, float]:
    """``(mean cross-entropy, error rate)`` with ``stats`` (inference BatchNorm)."""
    total, hits = 0.0, 0
    for start in range(0, len(labels), batch_size):
        x = jnp.asarray(images[start : start + batch_size])
        y = jnp.asarray(labels[start : start + batch_size])
        loss, correct = _loss_hits(model, params, stats, x, y)
        total, hits = total + float(loss), hits + int(correct)
    return total / len(labels), 1.0 - hits / len(labels)


@dataclasses.dataclass(frozen=True)
class LmcResult:
    """Losses and error rates along the line (``alphas``), and their barriers."""

    alphas: np.ndarray
    losses: np.ndarray
    errors: np.ndarray

    @property
    def barrier(self) -> float:
        """Largest loss rise above the endpoints' straight line (0 for a connected pair)."""
        return _rise(self.alphas, self.losses)

    @property
    def error_barrier(self) -> float:
        return _rise(self.alphas, self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alphas": self.alphas.tolist(),
            "losses": self.losses.tolist(),
            "errors": self.errors.tolist(),
            "barrier": self.barrier,
            "error_barrier": self.error_barrier,
        }


def _rise(alphas: np.ndarray, values: np.ndarray) -> float:
    line = (1.0 - alphas) * values[0] + alphas * values[-1]
    return float(np.max(values - line))


def barrier(
    model: Any,
    solution_a: tuple[Params, Params],
    solution_b: tuple[Params, Params],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    bn_images: np.ndarray | None = None,
    points: int = 11,
    batch_size: int = 500,
) -> LmcResult:
    """The loss and error along the line from ``solution_a`` to ``solution_b``.

    Args:
      model: applies ``(params, stats, images, train)``; both solutions are of it.
      solution_a, solution_b: ``(params, stats)`` pairs.
      images, labels: where the loss and error are measured.
      bn_images: the images BatchNorm statistics are recomputed on at every point (usually a
        sample of the training set); default ``images``. Models without BatchNorm skip it.
      points: evenly spaced ``α`` in ``[0, 1]``, at least 11.
      batch_size: of the BatchNorm passes (their images are cut to whole batches).

    Raises:
      ValueError: fewer than 11 points, or solutions of different architectures.
    """
    if points < 11:
        raise ValueError(f"interpolate at 11 points or more, got {points}")
    bn_images = images if bn_images is None else bn_images
    alphas = np.linspace(0.0, 1.0, points)
    losses, errors = [], []
    for alpha in alphas:
        params = interpolate(solution_a[0], solution_b[0], float(alpha))
        stats = recompute_batch_stats(model, params, solution_a[1], bn_images, batch_size)
        loss, error = evaluate_loss(model, params, stats, images, labels)
        losses.append(loss)
        errors.append(error)
    return LmcResult(alphas, np.asarray(losses), np.asarray(errors))
