"""Filter pruning of CNNs: channel groups scored, masked, and physically removed.

A model's channel groups (:meth:`jaxprune.models.vision.VisionModel.channel_groups`) say which
leaves share a channel: a convolution's filters, its BatchNorm's vectors, the next convolution's
inputs, and every tensor added into a residual stream. Pruning a group removes the same channel
indices from all of them, so the pruned network computes exactly what the dense one computes with
those channels zeroed::

    scores = l1_scores(model, params)                       # or beta_rank / hrank scores
    keep = select_filters(model, scores, 0.5)               # {group: bool (size,)}, exact counts
    masked = apply_masks(params, filter_masks(model, keep)) # same shapes, channels zeroed
    small, params, stats = shrink(model, params, stats, keep)   # physically smaller model

The L1-norm score (Li et al. 2017, "Pruning Filters for Efficient ConvNets") is ``Σ|W|`` over
each filter. A group with several producers (a residual stream) sums its producers' scores, each
divided by its largest, so that no one layer's scale dominates.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.core.masks import apply_masks
from jaxprune.core.paths import flat_leaves, set_leaves
from jaxprune.core.select import num_pruned, smallest_mask
from jaxprune.models.vision import ChannelGroup, VisionModel

__all__ = [
    "FilterPruneResult",
    "combine_producers",
    "filter_masks",
    "l1_scores",
    "masked_params",
    "prune_filters",
    "select_filters",
    "shrink",
]

Params = dict


def _groups(model: VisionModel, include: str | None) -> list[ChannelGroup]:
    groups = list(model.channel_groups())
    if include is None:
        return groups
    try:
        regex = re.compile(include)
    except re.error as err:
        raise ValueError(f"invalid group regex {include!r}: {err}") from None
    chosen = [g for g in groups if regex.fullmatch(g.name)]
    if not chosen:
        raise ValueError(
            f"group pattern {include!r} matches no channel group; groups: "
            f"{[g.name for g in groups]}"
        )
    return chosen


def combine_producers(per_producer: list[np.ndarray]) -> np.ndarray:
    """A group's score from its producers' scores: one producer's as they are; several each
    divided by its maximum, then summed (so that no layer's scale dominates)."""
    if len(per_producer) == 1:
        return np.asarray(per_producer[0], np.float32)
    total = np.zeros_like(np.asarray(per_producer[0], np.float32))
    for scores in per_producer:
        scores = np.asarray(scores, np.float32)
        top = float(np.max(scores)) if scores.size else 0.0
        total += scores / top if top > 0 else scores
    return total


def l1_scores(
    model: VisionModel, params: Params, include: str | None = None
) -> dict[str, np.ndarray]:
    """``{group: Σ|W| per channel}`` (producers combined, see :func:`combine_producers`)."""
    leaves = flat_leaves(params)
    out = {}
    for group in _groups(model, include):
        per = []
        for path in group.producers:
            kernel = np.asarray(leaves[path], np.float32)
            per.append(np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0))
        out[group.name] = combine_producers(per)
    return out


def select_filters(
    model: VisionModel,
    scores: Mapping[str, np.ndarray],
    fraction: float | Mapping[str, float],
    min_keep: int = 1,
) -> dict[str, np.ndarray]:
    """``{group: keep}``: in each scored group, all but the ``⌊f·size⌋`` lowest-scored channels.

    Args:
      model: the model whose groups are pruned.
      scores: ``{group name: (size,) scores}``; groups without scores stay whole.
      fraction: of each group's channels to remove, or ``{group: fraction}``.
      min_keep: channels every group keeps at least.

    Raises:
      ValueError: a fraction outside ``[0, 1)``, a score vector of the wrong size, or an unknown
        group name.
    """
    sizes = {g.name: g.size for g in model.channel_groups()}
    unknown = sorted(set(scores) - set(sizes))
    if unknown:
        raise ValueError(f"scores name unknown groups {unknown}; groups: {sorted(sizes)}")
    keep = {}
    for name, size in sizes.items():
        if name not in scores:
            keep[name] = np.ones(size, bool)
            continue
        f = fraction[name] if isinstance(fraction, Mapping) else fraction
        if not 0.0 <= f < 1.0:
            raise ValueError(f"fraction of filters for {name!r} must be in [0, 1), got {f}")
        s = np.asarray(scores[name], np.float32)
        if s.shape != (size,):
            raise ValueError(f"scores for {name!r} have shape {s.shape}, the group has {size}")
        k = min(num_pruned(f, size), size - min_keep)
        keep[name] = ~np.asarray(smallest_mask(jnp.asarray(s), k))
    return keep


def filter_masks(model: VisionModel, keep: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Leaf-shaped keep-masks ``{path: bool}`` of every params leaf a pruned group indexes.

    Paths of BatchNorm statistics are left out (a zero-scale, zero-bias BatchNorm outputs zero
    whatever its statistics); apply with :func:`jaxprune.core.masks.apply_masks` or keep with
    :func:`jaxprune.training.keep_masks`.
    """
    shapes = _member_shapes(model)
    masks: dict[str, np.ndarray] = {}
    for group in model.channel_groups():
        channels = np.asarray(keep.get(group.name, np.ones(group.size, bool)), bool)
        if channels.all():
            continue
        for path, axis in group.members:
            if path.rsplit("/", 1)[-1] in ("mean", "var"):
                continue
            shape = shapes[path]
            view = [1] * len(shape)
            view[axis] = shape[axis]
            mask = np.broadcast_to(channels.reshape(view), shape)
            masks[path] = masks[path] & mask if path in masks else mask.copy()
    return masks


def _member_shapes(model: VisionModel) -> dict[str, tuple[int, ...]]:
    params, stats = _abstract(model)
    return {p: tuple(x.shape) for p, x in {**flat_leaves(params), **flat_leaves(stats)}.items()}


def _abstract(model: VisionModel):
    return jax.eval_shape(lambda: model.init(0))


def shrink(
    model: VisionModel, params: Params, stats: Params, keep: Mapping[str, np.ndarray]
) -> tuple[VisionModel, Params, Params]:
    """The physically smaller model and its params and stats, without the removed channels.

    Raises:
      ValueError: a group would keep no channel, or the sliced leaves do not fit the smaller
        architecture (a channel group that misses a member).
    """
    widths = {name: int(np.sum(k)) for name, k in keep.items()}
    small = model.with_widths(widths)
    leaves = {**flat_leaves(params), **flat_leaves(stats)}
    sliced = dict(leaves)
    for group in model.channel_groups():
        index = np.flatnonzero(np.asarray(keep.get(group.name, np.ones(group.size, bool))))
        for path, axis in group.members:
            sliced[path] = jnp.take(sliced[path], index, axis=axis)
    new_params = set_leaves(params, {p: sliced[p] for p in flat_leaves(params)})
    new_stats = set_leaves(stats, {p: sliced[p] for p in flat_leaves(stats)})
    want = _member_shapes(small)
    wrong = {p: (tuple(x.shape), want[p]) for p, x in sliced.items() if tuple(x.shape) != want[p]}
    if wrong:
        sample = dict(list(wrong.items())[:4])
        raise ValueError(f"shrunk leaves do not fit the smaller model (path: got, want): {sample}")
    return small, new_params, new_stats


@dataclasses.dataclass(frozen=True)
class FilterPruneResult:
    """A physically pruned model: ``model``, ``params``, ``stats``, the ``keep`` per group, and
    MACs per image before and after (``flops_dense``, ``flops``)."""

    model: VisionModel
    params: Params
    stats: Params
    keep: dict[str, np.ndarray]
    flops_dense: int
    flops: int

    @property
    def flops_ratio(self) -> float:
        """Dense MACs over pruned MACs (Rethinking's Scratch-B epoch factor)."""
        return self.flops_dense / self.flops


def prune_filters(
    model: VisionModel,
    params: Params,
    stats: Params,
    scores: Mapping[str, np.ndarray],
    fraction: float | Mapping[str, float],
    min_keep: int = 1,
) -> FilterPruneResult:
    """Selects filters by ``scores`` and shrinks the model (see :func:`select_filters`)."""
    keep = select_filters(model, scores, fraction, min_keep)
    small, new_params, new_stats = shrink(model, params, stats, keep)
    return FilterPruneResult(small, new_params, new_stats, keep, model.flops(), small.flops())


def masked_params(model: VisionModel, params: Params, keep: Mapping[str, np.ndarray]) -> Params:
    """``params`` with the removed channels zeroed in every member (the mask-kept equivalent of
    :func:`shrink`)."""
    masks = filter_masks(model, keep)
    return apply_masks(params, masks) if masks else params
