"""Keep-masks of one leaf for a sparsity pattern, at a (possibly traced) fraction of its target.

The one place that turns "this leaf, these scores, this pattern" into a mask, shared by the
training-time transforms (``jaxprune.training``) and filter pruning (``jaxprune.structured``)::

    keep = keep_mask(jnp.abs(kernel), Unstructured(0.9))           # ⌊0.9·size⌋ zeros
    keep = keep_mask(jnp.abs(kernel), Unstructured(0.9), scale=s)  # ⌊(0.9·s)·size⌋, s traced
    keep = keep_mask(jnp.abs(kernel), NM(2, 4))                    # 2 of every 4 inputs
    keep = keep_mask(jnp.abs(kernel), Channel(0.5))                # half of the output channels

Leaves are kernels in the Flax layout: inputs on axis ``-2``, outputs on axis ``-1`` (a Dense
kernel ``(in, out)``, a convolution ``(kh, kw, in, out)``). N:M groups run along the input axis,
channels are the last axis. Counts are exact (``core.select.smallest_mask``, ties by position),
and may be traced, so one compiled training step serves every step of a sparsity schedule.

The count at scale ``s`` is ``⌊float32(sparsity·s)·n⌋`` computed in float32 (``n`` the number of
entries or channels), the same on the host and in a compiled program, so tests can predict it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.core.select import nm_prune_mask, smallest_mask
from jaxprune.core.sparsity import NM, Channel, Pattern, Unstructured

__all__ = ["channel_scores", "check_pattern", "keep_mask", "prune_count", "pruned_fraction"]


def check_pattern(pattern: Pattern, shape: Sequence[int], path: str = "leaf") -> None:
    """Raises ``ValueError`` naming ``path`` if ``pattern`` cannot apply to a leaf of ``shape``."""
    if not isinstance(pattern, Unstructured | NM | Channel):
        raise ValueError(
            f"{path}: unknown sparsity pattern {pattern!r}; use Unstructured, NM or Channel"
        )
    if isinstance(pattern, NM | Channel) and len(shape) < 2:
        raise ValueError(
            f"{path}: a {type(pattern).__name__} pattern needs a kernel (2-D or more), got shape "
            f"{tuple(shape)}; give this leaf an Unstructured target or leave it dense"
        )
    if isinstance(pattern, NM) and shape[-2] % pattern.m:
        raise ValueError(
            f"{path}: an {pattern} pattern needs the input axis (-2) to be a multiple of "
            f"{pattern.m}, got shape {tuple(shape)}"
        )


def prune_count(pattern: Pattern, shape: Sequence[int], scale: float | jax.Array = 1.0):
    """How many entries (Unstructured) or channels (Channel) are pruned at ``scale`` of the target.

    Returns an ``int32`` array (traced if ``scale`` is); N:M has no count (``ValueError``).
    """
    if isinstance(pattern, NM):
        raise ValueError("an N:M pattern prunes per group; it has no single count")
    n = shape[-1] if isinstance(pattern, Channel) else math.prod(shape)
    fraction = jnp.float32(pattern.sparsity) * jnp.asarray(scale, jnp.float32)
    return jnp.floor(fraction * jnp.float32(n)).astype(jnp.int32)


def pruned_fraction(pattern: Pattern, shape: Sequence[int], scale: float = 1.0) -> float:
    """The exact fraction of the leaf's entries pruned at ``scale`` (host-side, for reports)."""
    if isinstance(pattern, NM):
        return pattern.sparsity if scale > 0 else 0.0
    n = shape[-1] if isinstance(pattern, Channel) else math.prod(shape)
    k = math.floor(np.float32(pattern.sparsity) * np.float32(scale) * np.float32(n))
    return k / n


def channel_scores(scores: jax.Array) -> jax.Array:
    """One score per output channel: the sum of the leaf's scores over every other axis."""
    return jnp.sum(scores.reshape(-1, scores.shape[-1]).astype(jnp.float32), axis=0)


def keep_mask(
    scores: jax.Array,
    pattern: Pattern,
    scale: float | jax.Array = 1.0,
    count: int | jax.Array | None = None,
) -> jax.Array:
    """True where an entry stays: all but the lowest-scored ones the pattern prunes.

    Args:
      scores: one score per entry of the leaf (higher = more important); ``-inf`` forces an entry
        out first, ``+inf`` keeps it last.
      pattern: ``Unstructured``, ``NM`` or ``Channel``.
      scale: fraction of the pattern's target to apply (a sparsity schedule's progress); for N:M
        any ``scale > 0`` applies the whole pattern and ``0`` keeps everything.
      count: overrides the number pruned (entries, or channels for ``Channel``); ignored for N:M.

    Returns:
      A bool array of ``scores``' shape.
    """
    scores = jnp.asarray(scores)
    check_pattern(pattern, scores.shape)
    if isinstance(pattern, NM):
        inputs_first = jnp.moveaxis(scores, -2, 0)
        pruned = nm_prune_mask(inputs_first.reshape(scores.shape[-2], -1), pattern.n, pattern.m)
        pruned = jnp.moveaxis(pruned.reshape(inputs_first.shape), 0, -2)
        return ~pruned | (jnp.asarray(scale) <= 0)
    k = prune_count(pattern, scores.shape, scale) if count is None else count
    if isinstance(pattern, Channel):
        keep_channels = ~smallest_mask(channel_scores(scores), k)
        return jnp.broadcast_to(keep_channels, scores.shape)
    return ~smallest_mask(scores, k)
