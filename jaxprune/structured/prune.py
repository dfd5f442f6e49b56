"""Structured pruning end to end: plan, score, select, shrink.

::

    import jaxprune as jp

    pre = jp.load_pretrained("smollm2-135m")
    calib = jp.load_windows("shakespeare-calib", pre.tokenizer, nsamples=10, seqlen=64)
    result = jp.prune_structured(pre.model, pre.params, calib,
                                 jp.StructuredRecipe(method="llm-pruner", sparsity=0.2))
    result.model, result.params      # a smaller model (per-layer widths) and its params
    result.report["params_before"], result.report["params_after"]

The plan (:func:`~.allocate.make_plan`) is made first, from the config alone, so a bad ratio or
impossible widths fail before any gradient or statistic is computed.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

import jaxprune.structured.flap as flap
from jaxprune.core.paths import get_leaf
from jaxprune.models.base import LanguageModel, Params
from jaxprune.structured.allocate import Plan, count_params, make_plan, select
from jaxprune.structured.experts import EXPERT_METHODS, prune_experts, removed_per_block
from jaxprune.structured.groups import (
    BlockKeep,
    Steps,
    attention_members,
    attention_steps,
    mlp_members,
    reduce_members,
)
from jaxprune.structured.importance import GRADIENT_KINDS, channel_scores, gradients
from jaxprune.structured.recipe import StructuredRecipe
from jaxprune.structured.shrink import shrink

__all__ = [
    "StructuredResult",
    "check_structured",
    "flap_scores",
    "llm_pruner_scores",
    "prune_structured",
]


@dataclasses.dataclass(frozen=True)
class StructuredResult:
    """A structurally pruned model.

    Attributes:
      model: the smaller model (its config has per-layer widths).
      params: its params.
      keeps: ``{block: BlockKeep}``, the kept heads and channels (indices into the dense model);
        after expert pruning ``{block: kept expert indices}``.
      report: ``params_before``/``params_after`` (non-embedding), per-block ``widths_before`` and
        ``widths`` (``[heads, kv_heads, mlp]``), seconds, ...
    """

    model: LanguageModel
    params: Params
    keeps: dict[int, BlockKeep]
    report: dict[str, Any]


def _unit(model: LanguageModel, index: int, unit: str) -> str:
    """The attention unit of a block: ``query`` falls back to ``kv_group`` without GQA."""
    widths = model.config.layer_widths(index)
    return "kv_group" if widths.heads == widths.kv_heads else unit


def llm_pruner_scores(
    model, params, calibration, recipe: StructuredRecipe, plan: Plan, progress: bool = False
):
    """LLM-Pruner's unit scores of the planned blocks (``progress``: a bar over the gradients).

    Returns:
      ``({block: Steps}, {block: (mlp,) channel scores})``.
    """
    structure = model.family.structure
    units = {i: _unit(model, i, recipe.attention_unit) for i in plan.blocks}
    lookup = None
    if recipe.importance in GRADIENT_KINDS:
        linears = {m.path for i in plan.blocks for m in attention_members(structure, units[i])}
        linears |= {m.path for m in mlp_members(structure)}
        paths = [
            f"{model.block_prefix(i)}{path}/{leaf}"
            for i in plan.blocks
            for path in sorted(linears)
            for leaf in ("kernel", "bias")
            if leaf in get_leaf(model.block_params(params, i), path)
        ]
        grads = gradients(
            model,
            params,
            calibration,
            paths,
            second_order=recipe.importance == "element2",
            chunk=recipe.chunk,
            remat=recipe.remat,
            progress=progress,
        )
        fisher = grads.fisher or {}
        lookup = lambda prefix: (
            lambda leaf: (  # noqa: E731
                grads.mean[f"{prefix}/{leaf}"],
                fisher.get(f"{prefix}/{leaf}"),
            )
        )
    rng = np.random.default_rng(recipe.seed)
    steps, mlp_scores = {}, {}
    for i in plan.blocks:
        block, widths = model.block_params(params, i), plan.costs[i].widths
        count = widths.heads if units[i] == "query" else widths.kv_heads
        scored = []
        for members, n in (
            (attention_members(structure, units[i]), count),
            (mlp_members(structure), widths.mlp),
        ):
            if recipe.importance == "random":
                scored.append(rng.random(n))
                continue
            vectors = [
                channel_scores(
                    recipe.importance,
                    block,
                    m,
                    None if lookup is None else lookup(f"{model.block_prefix(i)}{m.path}"),
                )
                for m in members
            ]
            scored.append(reduce_members(vectors, n, recipe.reduction))
        costs = plan.costs[i]
        steps[i] = attention_steps(units[i], scored[0], widths, costs.head, costs.kv, "sum")
        mlp_scores[i] = scored[1]
    return steps, mlp_scores


def flap_scores(
    model, params, calibration, recipe: StructuredRecipe, plan: Plan, progress: bool = False
):
    """FLAP's standardised unit scores of the planned blocks (``progress``: a bar over batches).

    Returns:
      ``({block: Steps}, {block: (mlp,) channel scores}, {block: fluctuation statistics})``.
    """
    structure, family = model.family.structure, model.family
    outs = (structure.attn_out, structure.mlp_out)
    taps = (family.tap_of[structure.attn_out], family.tap_of[structure.mlp_out])
    stats = flap.fluctuations(
        model,
        params,
        calibration,
        plan.blocks,
        taps,
        batch_size=recipe.batch_size,
        progress=progress,
    )
    steps: dict[int, Steps] = {}
    mlp_scores = {}
    for i in plan.blocks:
        block, widths, costs = model.block_params(params, i), plan.costs[i].widths, plan.costs[i]
        unit = _unit(model, i, recipe.attention_unit)
        attention, mlp_scores[i] = flap.block_scores(
            block, stats[i], outs, model.config.head_dim, widths.kv_heads, unit
        )
        steps[i] = attention_steps(unit, attention, widths, costs.head, costs.kv, "mean")
    return steps, mlp_scores, stats


def _compensation(model, params, stats, keeps):
    outs = (model.family.structure.attn_out, model.family.structure.mlp_out)
    return {
        i: flap.compensation(
            model.block_params(params, i), stats[i], outs, keep, model.config.head_dim
        )
        for i, keep in keeps.items()
    }


def check_structured(model: LanguageModel, recipe: StructuredRecipe) -> None:
    """``ValueError`` if ``recipe`` cannot run on ``model`` (from the config alone, before any
    work): a sparsity the block range cannot reach, a family without a structure record, an
    expert method on a dense model or one that keeps fewer experts than the top-k."""
    if recipe.method in EXPERT_METHODS:
        removed_per_block(model, recipe.sparsity)
        return
    blocks = recipe.blocks(model.num_blocks)
    unit, allocation = recipe.attention_unit, recipe.allocation
    make_plan(model, recipe.sparsity, blocks, unit, allocation, multiple=recipe.uniform_multiple)


def prune_structured(
    model: LanguageModel,
    params: Params,
    calibration: np.ndarray | None,
    recipe: StructuredRecipe,
    *,
    progress: bool = True,
) -> StructuredResult:
    """Removes whole attention heads and MLP channels, making the model physically smaller.

    Args:
      model, params: the model to prune (dense, or already structurally pruned).
      calibration: int tokens ``(n, seqlen)``; ``None`` only when the recipe reads no data
        (``l1``, ``l2``, ``random``).
      recipe: the :class:`StructuredRecipe`.
      progress: show progress bars (FLAP's statistics pass, LLM-Pruner's gradients) on stderr.

    Returns:
      :class:`StructuredResult`.

    Raises:
      ValueError: before any work, for an unreachable sparsity, a bad block range, a family
        without a structure record or missing calibration windows.
    """
    if recipe.method in EXPERT_METHODS:
        smaller, new_params, keeps, raw = prune_experts(model, params, calibration, recipe)
        shape = None if calibration is None else list(np.shape(calibration))
        report = {**recipe.to_dict(), **raw, "calibration": shape}
        return StructuredResult(smaller, new_params, keeps, report)
    start = time.perf_counter()
    blocks = recipe.blocks(model.num_blocks)
    plan_args = (model, recipe.sparsity, blocks, recipe.attention_unit, recipe.allocation)
    plan = make_plan(*plan_args, multiple=recipe.uniform_multiple)
    if recipe.needs_calibration and calibration is None:
        raise ValueError(
            f"{recipe.method} ({recipe.importance or 'fluctuation'}) needs calibration windows"
        )
    if recipe.method == "flap":
        steps, mlp_scores, stats = flap_scores(model, params, calibration, recipe, plan, progress)
    else:
        steps, mlp_scores = llm_pruner_scores(model, params, calibration, recipe, plan, progress)
    scored = time.perf_counter()
    extra = 0
    for _ in range(2):  # a second pass removes as many weights as the added biases hold
        plan = make_plan(*plan_args, extra=extra, multiple=recipe.uniform_multiple)
        keeps = select(plan, steps, mlp_scores, per_parameter=recipe.method != "flap")
        biases = None
        if recipe.method == "flap" and recipe.bias_compensation:
            biases = _compensation(model, params, stats, keeps)
        smaller, new_params = shrink(model, params, keeps, biases)
        after = count_params(smaller, new_params)
        removed = sum(c.total() - c.total(keeps[i].widths) for i, c in plan.costs.items())
        added = after - (plan.params_before - removed)
        if added <= 0:
            break
        extra = added
    report = {
        **recipe.to_dict(),
        "blocks": list(plan.blocks),
        "params_before": plan.params_before,
        "params_after": after,
        "removed_fraction": 1.0 - after / plan.params_before,
        "widths_before": [list(model.config.layer_widths(i)) for i in range(model.num_blocks)],
        "widths": [list(smaller.config.layer_widths(i)) for i in range(smaller.num_blocks)],
        "calibration": None if calibration is None else list(np.shape(calibration)),
        "added_bias_params": max(added, 0),
        "score_seconds": scored - start,
        "seconds": time.perf_counter() - start,
    }
    return StructuredResult(smaller, new_params, keeps, report)
