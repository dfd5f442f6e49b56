"""Coupled groups of a decoder block: what removing one attention unit or MLP channel removes.

A family's :class:`~jaxprune.models.base.StructureSpec` names the linears; the config gives the
widths (``config.layer_widths(i)``) and the head size. Two attention units are supported:

- ``"kv_group"``: a key/value head with all the query heads that read it — the ``head_dim``
  output columns of ``k`` and ``v``, the ``G·head_dim`` columns of ``q`` and the matching input
  rows of the output projection. Removing one keeps ``heads / kv_heads`` and shrinks the KV cache.
- ``"query"``: query heads only, removed **evenly across the key/value groups** (one removal step
  takes the weakest remaining query head of every group), so every key/value head keeps the same
  number of query heads and the block stays a valid grouped-query attention. Key/value heads are
  kept. With one query head per key/value head (multi-head attention: LLaMA-1/2, OPT) this is the
  same as ``"kv_group"``.

An MLP channel is one output column (and bias) of every input projection (``gate``/``up`` or
``fc1``) and one input row of the output projection (``down`` or ``fc2``).

Unit scores follow LLM-Pruner's group importance: each member linear gives a score per channel;
members wider than the unit's ``head_dim`` (the ``G`` query heads of a key/value group) are folded
onto it by summing, the members are reduced channel by channel (``sum``/``mean``/``max``/``prod``/
``first``), and the channels of a unit are summed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from jaxprune.models.base import LayerWidths, StructureSpec

ATTENTION_UNITS = ("query", "kv_group")
REDUCTIONS = ("sum", "mean", "max", "prod", "first")

__all__ = [
    "ATTENTION_UNITS",
    "REDUCTIONS",
    "BlockKeep",
    "Member",
    "Steps",
    "attention_members",
    "attention_steps",
    "channels_of",
    "mlp_members",
    "reduce_members",
]


class Member(NamedTuple):
    """A linear of a coupled group: its block-relative path and the axis the group slices.

    ``axis`` is ``"out"`` (kernel columns, and the bias) or ``"in"`` (kernel rows).
    """

    path: str
    axis: str


@dataclasses.dataclass(frozen=True)
class BlockKeep:
    """What one block keeps: query heads, key/value heads and MLP channels (sorted indices)."""

    heads: tuple[int, ...]
    kv_heads: tuple[int, ...]
    mlp: tuple[int, ...]

    @classmethod
    def full(cls, widths: LayerWidths) -> BlockKeep:
        """Everything of a block with ``widths``."""
        return cls(
            tuple(range(widths.heads)), tuple(range(widths.kv_heads)), tuple(range(widths.mlp))
        )

    @property
    def widths(self) -> LayerWidths:
        return LayerWidths(len(self.heads), len(self.kv_heads), len(self.mlp))

    def check(self, widths: LayerWidths) -> None:
        """Raises ``ValueError`` unless this keep leaves a valid block of the original ``widths``.

        Valid: indices in range and sorted, at least one head and one channel, and every kept
        key/value head keeping the same number (≥ 1) of its own query heads, no orphan query head.
        """
        groups = widths.heads // widths.kv_heads
        for name, kept, total in zip(
            ("heads", "kv_heads", "mlp"), (self.heads, self.kv_heads, self.mlp), widths, strict=True
        ):
            if not kept or list(kept) != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= total:
                raise ValueError(f"kept {name} {list(kept)} are not sorted indices in [0, {total})")
        per_group = {g: sum(1 for h in self.heads if h // groups == g) for g in self.kv_heads}
        orphans = [h for h in self.heads if h // groups not in self.kv_heads]
        if orphans or len(set(per_group.values())) != 1:
            raise ValueError(
                f"kept query heads {list(self.heads)} do not split evenly over the kept key/value "
                f"heads {list(self.kv_heads)} ({groups} query heads per key/value head)"
            )


def channels_of(units: Sequence[int], size: int) -> np.ndarray:
    """The channel indices of ``units`` of ``size`` consecutive channels each."""
    units = np.asarray(units, dtype=np.int64)
    return (units[:, None] * size + np.arange(size)[None, :]).reshape(-1)


def attention_members(structure: StructureSpec, unit: str) -> tuple[Member, ...]:
    """The linears of an attention unit, the one ``first`` reduces to first (``query``)."""
    if unit == "query":
        return (Member(structure.query, "out"), Member(structure.attn_out, "in"))
    return (
        Member(structure.query, "out"),
        Member(structure.key, "out"),
        Member(structure.value, "out"),
        Member(structure.attn_out, "in"),
    )


def mlp_members(structure: StructureSpec) -> tuple[Member, ...]:
    return (*(Member(p, "out") for p in structure.mlp_in), Member(structure.mlp_out, "in"))


def reduce_members(vectors: Sequence[np.ndarray], units: int, reduction: str) -> np.ndarray:
    """Unit scores from per-channel member scores (LLM-Pruner's group reduction).

    Args:
      vectors: one per member, of length ``units · k · c`` (``k`` folded by summing: the query
        heads of a key/value group), in member order.
      units: the number of units.
      reduction: how members combine channel by channel, one of :data:`REDUCTIONS`.

    Returns:
      ``(units,)`` float64 scores: the reduced channel scores summed over each unit's channels.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown group reduction {reduction!r}; choose one of {REDUCTIONS}")
    width = min(np.size(v) for v in vectors) // units
    aligned = np.stack(
        [np.asarray(v, np.float64).reshape(units, -1, width).sum(axis=1) for v in vectors]
    )
    reduced = {
        "sum": lambda a: a.sum(0),
        "mean": lambda a: a.mean(0),
        "max": lambda a: a.max(0),
        "prod": lambda a: a.prod(0),
        "first": lambda a: a[0],
    }[reduction](aligned)
    return reduced.sum(axis=1)


@dataclasses.dataclass(frozen=True)
class Steps:
    """A block's attention removals in the order they are taken, weakest first.

    Step ``j`` removes ``heads[j]`` query heads and ``kv_heads[j]`` key/value heads; its score is
    ``scores[j]`` and it removes ``costs[j]`` parameters. At least one step is always left.
    """

    heads: tuple[tuple[int, ...], ...]
    kv_heads: tuple[tuple[int, ...], ...]
    scores: np.ndarray
    costs: np.ndarray

    def keep(self, taken: int, widths: LayerWidths) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Kept query and key/value heads after the first ``taken`` steps."""
        gone_q = {h for step in self.heads[:taken] for h in step}
        gone_kv = {g for step in self.kv_heads[:taken] for g in step}
        heads = tuple(h for h in range(widths.heads) if h not in gone_q)
        return heads, tuple(g for g in range(widths.kv_heads) if g not in gone_kv)


def attention_steps(
    unit: str,
    scores: np.ndarray,
    widths: LayerWidths,
    head_cost: int,
    kv_cost: int,
    combine: str = "sum",
) -> Steps:
    """Orders a block's attention removals from unit scores.

    Args:
      unit: ``"query"`` (scores per query head) or ``"kv_group"`` (scores per key/value head).
      scores: the unit scores.
      widths: the block's widths.
      head_cost: parameters of one query head (its ``q`` columns and output-projection rows).
      kv_cost: parameters of one key/value head (its ``k`` and ``v`` columns).
      combine: how a query step's heads (one per group) combine into the step's score:
        ``"sum"`` (additive importances, LLM-Pruner) or ``"mean"`` (standardised scores, FLAP).

    Returns:
      :class:`Steps`; for ``"query"`` with one query head per key/value head, the ``kv_group``
      steps (removing the last query head of a group removes its key/value head).
    """
    groups = widths.heads // widths.kv_heads
    scores = np.asarray(scores, np.float64)
    if unit == "query" and groups > 1:
        by_group = scores.reshape(widths.kv_heads, groups)
        order = np.argsort(by_group, axis=1, kind="stable")  # weakest first within each group
        heads = tuple(
            tuple(int(g * groups + order[g, j]) for g in range(widths.kv_heads))
            for j in range(groups - 1)
        )
        picked = np.take_along_axis(by_group, order, axis=1)[:, : groups - 1]
        step_scores = picked.sum(0) if combine == "sum" else picked.mean(0)
        costs = np.full(groups - 1, widths.kv_heads * head_cost)
        return Steps(heads, ((),) * (groups - 1), step_scores, costs)
    if unit == "query":  # one query head per group: a head is its key/value group
        unit = "kv_group"
    order = np.argsort(scores, kind="stable")[: widths.kv_heads - 1]
    heads = tuple(tuple(range(g * groups, (g + 1) * groups)) for g in order.tolist())
    kv_heads = tuple((int(g),) for g in order)
    costs = np.full(len(order), groups * head_cost + kv_cost)
    return Steps(heads, kv_heads, scores[order], costs)


def member_channel_cost(block: Mapping, member: Member) -> int:
    """Parameters of one channel of ``member`` in the block params (a kernel column + bias)."""
    linear = block
    for part in member.path.split("/"):
        linear = linear[part]
    kernel = linear["kernel"]
    if member.axis == "in":
        return int(kernel.shape[1])
    return int(kernel.shape[0]) + (1 if "bias" in linear else 0)
