"""How masks change at a mask-update step: prune updaters and drop-and-grow updaters.

Every updater works on one leaf at a time (its weights ``w``, gradient ``g`` and keep-mask) and
selects exact counts with :func:`jaxprune.core.patterns.keep_mask`, so a schedule's sparsity is
met to the entry at every update.

Prune updaters score the entries and prune the lowest, **monotonically**: an entry pruned before
gets score ``-inf``, so it is never revived, and the number pruned never falls:

- :func:`magnitude`: ``|w|`` (Zhu & Gupta's GMP with a :func:`~jaxprune.training.schedules.gmp`
  schedule; one-shot magnitude pruning with :class:`~jaxprune.training.schedules.OneShot`);
- :func:`random`: uniform random scores (a fresh draw per update, from the transform's seed);
- :func:`saliency`: ``|w·g|``, the first-order Taylor estimate of the loss change (SNIP's score);
- :func:`ste`: ``|w|`` recomputed at each update **without** monotonicity, on dense weights: the
  forward pass uses the masked weights and the gradient flows straight through to all of them
  (Bengio et al.'s straight-through estimator as in jaxpruner's ``SteMagnitudePruning``), so a
  pruned weight may come back when it grows.

Drop-and-grow updaters keep the number of active entries of each leaf fixed. At each update they
drop the ``⌊f·n_active⌋`` active entries of smallest ``|w|`` and grow as many among the inactive
ones (the just-dropped included), which start at zero with a reset optimizer state:

- :func:`rigl`: grow where ``|g|`` is largest (Evci et al. 2020);
- :func:`set_`: grow at random (Mocanu et al. 2018).

``f`` decays from ``drop_fraction`` to 0 by a cosine over ``decay_steps`` (RigL's schedule), or
stays constant when ``decay_steps`` is ``None``. Initial masks are random at the schedule's
starting sparsity, as in both papers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxprune.core.patterns import keep_mask, prune_count
from jaxprune.core.select import smallest_mask
from jaxprune.core.sparsity import NM, Channel, Pattern, Unstructured

__all__ = ["Updater", "magnitude", "random", "rigl", "saliency", "set_", "ste"]

Scorer = Callable[[jax.Array, jax.Array | None, jax.Array], jax.Array]


def _abs_weight(w: jax.Array, g: jax.Array | None, key: jax.Array) -> jax.Array:
    return jnp.abs(w).astype(jnp.float32)


def _uniform(w: jax.Array, g: jax.Array | None, key: jax.Array) -> jax.Array:
    return jax.random.uniform(key, w.shape, jnp.float32)


def _abs_weight_times_grad(w: jax.Array, g: jax.Array | None, key: jax.Array) -> jax.Array:
    if g is None:  # no gradient before the first step: fall back to magnitude
        return _abs_weight(w, g, key)
    return jnp.abs(w.astype(jnp.float32) * g.astype(jnp.float32))


def _abs_grad(w: jax.Array, g: jax.Array | None, key: jax.Array) -> jax.Array:
    return jnp.abs(g).astype(jnp.float32)


def _pruned_so_far(keep: jax.Array, pattern: Pattern) -> jax.Array:
    if isinstance(pattern, Channel):
        return jnp.sum(~jnp.any(keep.reshape(-1, keep.shape[-1]), axis=0), dtype=jnp.int32)
    return jnp.sum(~keep, dtype=jnp.int32)


@dataclasses.dataclass(frozen=True)
class Updater:
    """A mask-update rule (build one with the functions of this module).

    Attributes:
      name: for reports.
      score: ``score(w, g, key) -> float32 scores``; for drop-and-grow, the **grow** score.
      regrow: drop-and-grow (fixed active count) instead of monotone pruning.
      dense_weights: weights stay dense and the forward pass masks them with a straight-through
        gradient (STE); otherwise pruned weights are held at exactly zero.
      drop_fraction: drop-and-grow only: the fraction of active entries replaced at an update.
      decay_steps: drop-and-grow only: the cosine decay's length, ``None`` for a constant fraction.
    """

    name: str
    score: Scorer
    regrow: bool = False
    dense_weights: bool = False
    drop_fraction: float = 0.3
    decay_steps: int | None = None

    def check(self, pattern: Pattern, path: str) -> None:
        """Raises ``ValueError`` if this updater cannot use ``pattern`` (at leaf ``path``)."""
        if self.regrow and not isinstance(pattern, Unstructured):
            raise ValueError(
                f"{self.name} keeps an unstructured count per leaf; {path!r} has the {pattern} "
                "pattern (use an Unstructured target, or a prune updater for N:M and channels)"
            )

    def init_mask(self, w: jax.Array, pattern: Pattern, scale: jax.Array, key: jax.Array):
        """The keep-mask before the first step, at ``scale`` of the target."""
        # No gradient exists yet: random starts stay random, every other score starts as |w|.
        random_start = self.regrow or self.score is _uniform
        scores = _uniform(w, None, key) if random_start else _abs_weight(w, None, key)
        return keep_mask(scores, pattern, scale)

    def update_mask(
        self,
        keep: jax.Array,
        w: jax.Array,
        g: jax.Array,
        pattern: Pattern,
        scale: jax.Array,
        key: jax.Array,
        step: jax.Array,
    ) -> jax.Array:
        """The keep-mask after an update at ``step`` (``scale``: the schedule's fraction)."""
        if self.regrow:
            return self._drop_and_grow(keep, w, g, key, step)
        if self.dense_weights:
            return keep_mask(self.score(w, g, key), pattern, scale)
        scores = jnp.where(keep, self.score(w, g, key), -jnp.inf)
        if isinstance(pattern, NM):
            return keep_mask(scores, pattern, scale)
        count = jnp.maximum(prune_count(pattern, w.shape, scale), _pruned_so_far(keep, pattern))
        return keep_mask(scores, pattern, scale, count=count)

    def fraction_at(self, step: jax.Array) -> jax.Array:
        """The drop fraction at ``step``: RigL's cosine decay, or constant."""
        if self.decay_steps is None:
            return jnp.float32(self.drop_fraction)
        t = jnp.clip(jnp.asarray(step, jnp.float32) / self.decay_steps, 0.0, 1.0)
        return jnp.float32(self.drop_fraction) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))

    def _drop_and_grow(self, keep, w, g, key, step) -> jax.Array:
        active = jnp.sum(keep, dtype=jnp.int32)
        n_swap = jnp.floor(self.fraction_at(step) * active.astype(jnp.float32)).astype(jnp.int32)
        # Drop: the n_swap smallest |w| among the active entries (inactive ones sort last).
        dropped = smallest_mask(jnp.where(keep, jnp.abs(w).astype(jnp.float32), jnp.inf), n_swap)
        kept = keep & ~dropped
        # Grow: the n_swap largest grow scores among the rest (kept ones sort last).
        grow = jnp.where(kept, -jnp.inf, self.score(w, g, key))
        return kept | smallest_mask(-grow, n_swap)


def magnitude() -> Updater:
    """Monotone magnitude pruning: prune the smallest ``|w|``."""
    return Updater("magnitude", _abs_weight)


def random() -> Updater:
    """Monotone random pruning (the control every score should beat)."""
    return Updater("random", _uniform)


def saliency() -> Updater:
    """Monotone pruning by ``|w·g|`` (``|w|`` when no gradient exists yet)."""
    return Updater("saliency", _abs_weight_times_grad)


def ste() -> Updater:
    """Magnitude masks on dense weights with a straight-through gradient (masks may change back)."""
    return Updater("ste", _abs_weight, dense_weights=True)


def _check_drop(drop_fraction: float, decay_steps: int | None) -> None:
    if not 0.0 < drop_fraction < 1.0:
        raise ValueError(f"drop_fraction must be in (0, 1), got {drop_fraction}")
    if decay_steps is not None and not (isinstance(decay_steps, int) and decay_steps > 0):
        raise ValueError(f"decay_steps must be a positive int or None, got {decay_steps!r}")


def rigl(drop_fraction: float = 0.3, decay_steps: int | None = None) -> Updater:
    """RigL: drop the smallest ``|w|``, grow the largest ``|g|`` (cosine-decayed fraction)."""
    _check_drop(drop_fraction, decay_steps)
    return Updater(
        "rigl", _abs_grad, regrow=True, drop_fraction=drop_fraction, decay_steps=decay_steps
    )


def set_(drop_fraction: float = 0.3, decay_steps: int | None = None) -> Updater:
    """SET: drop the smallest ``|w|``, grow at random (``set_``: ``set`` is a builtin)."""
    _check_drop(drop_fraction, decay_steps)
    return Updater(
        "set", _uniform, regrow=True, drop_fraction=drop_fraction, decay_steps=decay_steps
    )
