"""How much each block loses: a parameter target, per-block widths or one global ranking.

The target is a fraction ``S`` of the model's **non-embedding** parameters (every leaf but the
token/position embeddings and the LM head). Only the member linears of the pruned blocks can lose
parameters, so the per-block ratio is larger than ``S``.

- ``"per-block"`` (LLM-Pruner's default): every pruned block removes the same share of its
  attention units and MLP channels. Attention is removed in whole steps (a key/value group, or one
  query head from every group: the GQA quantum), so its share is rounded to the nearest step; the
  MLP channels then absorb the rounding, so the removed parameters hit the target to within one
  channel per block.
- ``"global"``: one ranking over all pruned blocks' attention steps and MLP channels; the weakest
  are removed until the target is met. LLM-Pruner's scores are ranked per removed parameter (a
  head and a channel differ ~100× in size); FLAP's standardised scores are ranked as they are,
  with the parameter count only as the budget (FLAP's "adaptive structure").
- uniform widths (``make_plan(..., multiple=m)``, the recipe's ``uniform=True``): every block
  removes the same attention steps and keeps the same MLP width, rounded to a multiple of ``m``
  (64 by default, friendly to tensor cores and MXUs), so the pruned model is a standard config
  (one head count and one ``intermediate_size``) that transformers, vLLM and llama.cpp load
  unchanged, as NVIDIA's Minitron ships its pruned widths. The rounding moves the removed count
  by at most ``m / 2`` channels per block from the target.

Every block keeps at least one attention step's worth of heads and one MLP channel. All of this
is decided from the config alone (:func:`make_plan`), so a bad ratio or impossible widths are
errors before any gradient or statistic is computed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import numpy as np

from jaxprune.core.deprecation import renamed
from jaxprune.core.paths import leaf_paths
from jaxprune.models.base import LanguageModel, LayerWidths
from jaxprune.structured.groups import BlockKeep, Member, Steps, member_channel_cost

STRUCTURED_ALLOCATIONS = ("per-block", "global")

__all__ = [
    "STRUCTURED_ALLOCATIONS",
    "BlockCosts",
    "Plan",
    "count_params",
    "default_block_range",
    "make_plan",
    "select",
]


def count_params(model: LanguageModel, params=None) -> int:
    """Non-embedding parameters of ``model`` (of ``params``, arrays or shapes, if given)."""
    tree = params if params is not None else jax.eval_shape(lambda: model.init_params(0))
    skip = model.family.structure.embeddings
    return sum(
        int(np.prod(leaf.shape))
        for path, leaf in zip(leaf_paths(tree), jax.tree.leaves(tree), strict=True)
        if path.split("/")[0] not in skip
    )


def default_block_range(layers: int) -> tuple[int, int]:
    """LLM-Pruner's range (blocks 4–30 of LLaMA-7B's 32) scaled to ``layers`` blocks."""
    return round(4 * layers / 32), layers - round(2 * layers / 32)


@dataclasses.dataclass(frozen=True)
class BlockCosts:
    """Parameters removed by one block's units: a query head, a key/value head, an MLP channel."""

    widths: LayerWidths
    head: int
    kv: int
    channel: int

    def steps(self, unit: str) -> tuple[int, int]:
        """``(attention steps available, parameters per step)``; one step is always kept."""
        groups = self.widths.heads // self.widths.kv_heads
        if unit == "query" and groups > 1:
            return groups - 1, self.widths.kv_heads * self.head
        return self.widths.kv_heads - 1, groups * self.head + self.kv

    def total(self, widths: LayerWidths | None = None) -> int:
        """Parameters of the block's member linears (at ``widths``; default its own)."""
        w = widths or self.widths
        return w.heads * self.head + w.kv_heads * self.kv + w.mlp * self.channel


def block_costs(model: LanguageModel, abstract, index: int) -> BlockCosts:
    """The unit costs of block ``index``, from the model's abstract params (shapes only)."""
    structure, head_dim = model.family.structure, model.config.head_dim
    block = model.block_params(abstract, index)
    cost = lambda path, axis: member_channel_cost(block, Member(path, axis))  # noqa: E731
    head = (cost(structure.query, "out") + cost(structure.attn_out, "in")) * head_dim
    kv = (cost(structure.key, "out") + cost(structure.value, "out")) * head_dim
    channel = sum(cost(p, "out") for p in structure.mlp_in) + cost(structure.mlp_out, "in")
    return BlockCosts(model.config.layer_widths(index), head, kv, channel)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a structured prune removes, decided before any work.

    Attributes:
      blocks: the pruned blocks.
      costs: ``{block: BlockCosts}``.
      params_before: non-embedding parameters of the model.
      target: parameters to remove.
      steps, channels: per-block mode: attention steps and MLP channels each block removes
        (empty for global mode).
    """

    blocks: tuple[int, ...]
    costs: Mapping[int, BlockCosts]
    params_before: int
    target: int
    steps: Mapping[int, int]
    channels: Mapping[int, int]


def make_plan(
    model: LanguageModel,
    sparsity: float,
    blocks: Sequence[int],
    unit: str,
    allocation: str,
    extra: int = 0,
    multiple: int | None = None,
) -> Plan:
    """Checks that ``sparsity`` is reachable and, per block, fixes the widths.

    ``extra`` parameters are removed on top of the target (to pay for biases the prune adds).
    ``multiple``: uniform widths, every block's kept MLP width a multiple of it (``allocation``
    must then be ``"per-block"``, and ``blocks`` every block of the model).

    Raises:
      ValueError: the model family has no structure record, the sparsity is outside (0, 1), no
        block is pruned, or the target cannot be met while keeping one unit of every kind per
        block (naming the largest reachable sparsity); for uniform widths also blocks that
        differ before pruning, a partial block range or a multiple above the MLP width.
    """
    if model.family.structure is None:
        raise ValueError(f"the {model.family.name} family declares no structure for pruning")
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"structured sparsity must be in (0, 1), got {sparsity}")
    if allocation not in STRUCTURED_ALLOCATIONS:
        raise ValueError(
            f"unknown allocation {allocation!r}; choose one of {STRUCTURED_ALLOCATIONS}"
        )
    if not blocks:
        raise ValueError("no block is pruned: the block range is empty")
    abstract = jax.eval_shape(lambda: model.init_params(0))
    costs = {i: block_costs(model, abstract, i) for i in blocks}
    before = count_params(model, abstract)
    target = int(round(sparsity * before)) + extra
    reachable = sum(
        c.steps(unit)[0] * c.steps(unit)[1] + (c.widths.mlp - 1) * c.channel for c in costs.values()
    )
    if target > reachable:
        raise ValueError(
            f"removing {sparsity:.1%} of the non-embedding parameters ({target:,}) is impossible "
            f"with blocks {blocks[0]}..{blocks[-1]}: keeping one attention unit and one MLP "
            f"channel per block, at most {reachable / before:.1%} can go; lower the sparsity or "
            "widen the block range"
        )
    if allocation == "global":
        return Plan(tuple(blocks), costs, before, target, {}, {})
    if multiple is not None:
        steps, channels = _uniform(model, costs, target, unit, multiple)
    else:
        steps, channels = _per_block(costs, target, unit)
    return Plan(tuple(blocks), costs, before, target, steps, channels)


def _per_block(costs: Mapping[int, BlockCosts], target: int, unit: str):
    ratio = target / sum(c.total() for c in costs.values())
    steps = {}
    for i, c in costs.items():
        available, _ = c.steps(unit)
        steps[i] = min(int(round(ratio * (available + 1))), available)
    while sum(steps[i] * costs[i].steps(unit)[1] for i in costs) > target:
        i = max(steps, key=lambda b: (steps[b], b))  # undo the rounding where it went furthest
        steps[i] -= 1
    left = target - sum(steps[i] * costs[i].steps(unit)[1] for i in costs)
    share = {i: c.widths.mlp * c.channel for i, c in costs.items()}
    exact = {i: left * share[i] / sum(share.values()) / costs[i].channel for i in costs}
    channels = {i: int(np.floor(x)) for i, x in exact.items()}
    missing = int(round(left / next(iter(costs.values())).channel)) - sum(channels.values())
    for i in sorted(exact, key=lambda b: channels[b] - exact[b])[: max(missing, 0)]:
        channels[i] += 1
    for i, c in costs.items():
        if channels[i] > c.widths.mlp - 1:
            raise ValueError(
                f"block {i} would keep {c.widths.mlp - channels[i]} MLP channels; lower the "
                "sparsity, widen the block range or use allocation='global'"
            )
    return steps, channels


def _uniform(model: LanguageModel, costs: Mapping[int, BlockCosts], target, unit, multiple):
    if len(costs) != model.num_blocks:
        raise ValueError(
            f"uniform widths need every block pruned ({model.num_blocks}); blocks outside the "
            "range would keep their own width — drop the block range"
        )
    first = next(iter(costs.values()))
    for i, c in costs.items():
        if c != first:
            raise ValueError(
                f"uniform widths need blocks of equal widths before pruning; block {i} has "
                f"{c.widths}, block 0 {first.widths}"
            )
    mlp = first.widths.mlp
    if not 0 < multiple <= mlp:
        raise ValueError(
            f"the MLP multiple {multiple} must be in 1..{mlp} (the MLP width); lower it"
        )
    available, step_cost = first.steps(unit)
    ratio = target / (first.total() * len(costs))
    steps = min(int(round(ratio * (available + 1))), available)
    per_block = target / len(costs) - steps * step_cost
    exact_kept = mlp - per_block / first.channel
    kept_widths = [*range(multiple, mlp + 1, multiple), mlp]
    kept = min(kept_widths, key=lambda w: (abs(w - exact_kept), -w))
    return dict.fromkeys(costs, steps), dict.fromkeys(costs, mlp - kept)


def select(
    plan_: Plan,
    steps: Mapping[int, Steps],
    mlp_scores: Mapping[int, np.ndarray],
    *,
    per_parameter: bool,
) -> dict[int, BlockKeep]:
    """Which units each block keeps, from the plan and the unit scores.

    Args:
      plan_: from :func:`make_plan`.
      steps: ``{block: Steps}``, the attention removals in order.
      mlp_scores: ``{block: (mlp,) scores}``.
      per_parameter: global mode ranks score / parameters (LLM-Pruner) instead of the score (FLAP).

    Returns:
      ``{block: BlockKeep}``.
    """
    if plan_.steps:
        taken, channels = plan_.steps, plan_.channels
    else:
        taken, channels = _rank_globally(plan_, steps, mlp_scores, per_parameter)
    keeps = {}
    for i in plan_.blocks:
        widths = plan_.costs[i].widths
        heads, kv_heads = steps[i].keep(taken[i], widths)
        order = np.argsort(np.asarray(mlp_scores[i]), kind="stable")
        mlp = tuple(sorted(int(j) for j in order[channels[i] :]))
        keeps[i] = BlockKeep(heads, kv_heads, mlp)
    return keeps


def _rank_globally(plan_, steps, mlp_scores, per_parameter):
    rows = []  # (key, block, is_channel, order within its block, cost)
    for i in plan_.blocks:
        c = plan_.costs[i]
        for j, (score, cost) in enumerate(zip(steps[i].scores, steps[i].costs, strict=True)):
            rows.append((score / cost if per_parameter else score, i, 0, j, int(cost)))
        ordered = np.sort(np.asarray(mlp_scores[i], np.float64), kind="stable")[: c.widths.mlp - 1]
        for j, score in enumerate(ordered):
            rows.append((score / c.channel if per_parameter else score, i, 1, j, c.channel))
    rows.sort(key=lambda r: (r[0], r[1], r[2], r[3]))
    taken = dict.fromkeys(plan_.blocks, 0)
    channels = dict.fromkeys(plan_.blocks, 0)
    removed = 0
    for _, i, is_channel, j, cost in rows:
        if removed + cost / 2 > plan_.target:
            continue
        counter = channels if is_channel else taken
        if counter[i] == j:  # a block's units go weakest first
            counter[i] += 1
            removed += cost
    return taken, channels


# Old names, kept for a while: each warns and gives the new one.
__getattr__ = renamed(__name__, {"ALLOCATIONS": "STRUCTURED_ALLOCATIONS"})
