"""When masks change during training, and how much of the target sparsity applies at each step.

A schedule answers two questions about a (traced) step count, so that one compiled training step
serves the whole run:

- ``scale(step)``: the fraction of each leaf's target sparsity in force (``0`` dense, ``1`` the
  full target);
- ``is_update(step)``: whether the masks are recomputed at this step.

Built-ins (jaxpruner's schedules, plus Zhu & Gupta's start sparsity):

- :class:`Fixed`: the full target from the first step, masks never recomputed (static sparse
  training: the mask of ``init`` is kept);
- :class:`OneShot`: dense until ``step``, then pruned once to the full target;
- :class:`Periodic`: the full target from the start, masks recomputed every ``every`` steps in
  ``[start, end]`` (RigL and SET drop and regrow at these steps);
- :class:`Polynomial`: gradual magnitude pruning, ``s_t = s_f + (s_i - s_f)(1 - p_t)^power`` with
  ``p_t = (t - start) / (end - start)`` clipped to ``[0, 1]``, masks recomputed every ``every``
  steps in ``[start, end]`` (Zhu & Gupta 2017, "To prune, or not to prune"; ``power=3`` is their
  cubic schedule, :func:`gmp`). ``initial`` is ``s_i`` as a fraction of the target.

Masks computed at step ``t`` use ``scale(t)``, so the last update (at the last multiple of
``every`` not after ``end``) should fall on ``end`` for the final sparsity to be the target:
:class:`Polynomial` checks this when made.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

__all__ = ["Fixed", "OneShot", "Periodic", "Polynomial", "Schedule", "gmp"]


def _check_steps(start: int, end: int | None, every: int) -> None:
    if not (isinstance(every, int) and every >= 1):
        raise ValueError(f"every must be a positive number of steps, got {every!r}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if end is not None and end < start:
        raise ValueError(f"end ({end}) must not come before start ({start})")


def _on_grid(step: jax.Array, start: int, end: int | None, every: int) -> jax.Array:
    after = (step >= start) & ((step - start) % every == 0)
    return after if end is None else after & (step <= end)


@dataclasses.dataclass(frozen=True)
class Fixed:
    """Full target from the start; the masks of ``init`` are never recomputed."""

    def scale(self, step: jax.Array) -> jax.Array:
        return jnp.ones_like(jnp.asarray(step), jnp.float32)

    def is_update(self, step: jax.Array) -> jax.Array:
        return jnp.zeros_like(jnp.asarray(step), bool)


@dataclasses.dataclass(frozen=True)
class OneShot:
    """Dense until ``step``, then pruned to the full target once (at ``step``)."""

    step: int = 0

    def __post_init__(self):
        _check_steps(self.step, None, 1)

    def scale(self, step: jax.Array) -> jax.Array:
        return (jnp.asarray(step) >= self.step).astype(jnp.float32)

    def is_update(self, step: jax.Array) -> jax.Array:
        return jnp.asarray(step) == self.step


@dataclasses.dataclass(frozen=True)
class Periodic:
    """Full target throughout; masks recomputed every ``every`` steps in ``[start, end]``."""

    every: int
    start: int = 0
    end: int | None = None

    def __post_init__(self):
        _check_steps(self.start, self.end, self.every)

    def scale(self, step: jax.Array) -> jax.Array:
        return jnp.ones_like(jnp.asarray(step), jnp.float32)

    def is_update(self, step: jax.Array) -> jax.Array:
        return _on_grid(jnp.asarray(step), self.start, self.end, self.every)


@dataclasses.dataclass(frozen=True)
class Polynomial:
    """Gradual pruning from ``initial`` to ``1`` (fractions of the target) over ``[start, end]``.

    Attributes:
      start, end: the first and last pruning steps (``end - start`` a multiple of ``every``).
      every: steps between mask updates.
      power: the polynomial's degree (3: Zhu & Gupta's cubic schedule).
      initial: the sparsity at ``start`` as a fraction of the target (``s_i / s_f``).
    """

    start: int
    end: int
    every: int = 1
    power: float = 3.0
    initial: float = 0.0

    def __post_init__(self):
        _check_steps(self.start, self.end, self.every)
        if (self.end - self.start) % self.every:
            raise ValueError(
                f"end - start ({self.end - self.start}) must be a multiple of every "
                f"({self.every}) so that the last update reaches the target"
            )
        if not 0.0 <= self.initial <= 1.0:
            raise ValueError(
                f"initial must be a fraction of the target in [0, 1], not {self.initial}"
            )
        if self.power <= 0:
            raise ValueError(f"power must be positive, got {self.power}")

    def scale(self, step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        length = max(self.end - self.start, 1)
        progress = jnp.clip((step - self.start) / jnp.float32(length), 0.0, 1.0)
        if self.end == self.start:
            progress = (step >= self.start).astype(jnp.float32)
        remaining = (1.0 - progress) ** self.power
        scale = 1.0 + (self.initial - 1.0) * remaining
        return jnp.where(step >= self.start, scale, 0.0).astype(jnp.float32)

    def is_update(self, step: jax.Array) -> jax.Array:
        return _on_grid(jnp.asarray(step), self.start, self.end, self.every)


def gmp(start: int, end: int, every: int = 1, initial: float = 0.0) -> Polynomial:
    """Zhu & Gupta's gradual magnitude pruning schedule (cubic) from ``start`` to ``end``."""
    return Polynomial(start, end, every, power=3.0, initial=initial)


Schedule = Fixed | OneShot | Periodic | Polynomial
