"""Allocation: targets are met, widths are valid, and bad requests fail before any work."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from structured_models import TINY_GQA, random_params

from jaxprune.models import LanguageModel, LlamaConfig
from jaxprune.structured import (
    StructuredRecipe,
    count_params,
    default_block_range,
    make_plan,
    prune_structured,
)

MODEL = LanguageModel(TINY_GQA)
# 12 blocks of LLaMA-7B's proportions (in miniature): big enough for per-block rounding to matter
DEEP = LanguageModel(
    LlamaConfig(
        vocab_size=32,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=12,
        num_attention_heads=8,
        num_key_value_heads=4,
    )
)


def test_the_default_range_is_llm_pruners_scaled_to_the_depth():
    assert default_block_range(32) == (4, 30)  # LLaMA-7B: blocks 4..29, as in the paper
    assert default_block_range(30) == (4, 28)  # SmolLM2-135M
    assert default_block_range(2) == (0, 2)


def test_non_embedding_parameters_leave_out_the_embeddings_and_the_head():
    total = sum(np.size(x) for x in jax.tree.leaves(MODEL.init_params(0)))
    embeddings = 2 * 64 * 48  # embed_tokens and the untied lm_head
    assert count_params(MODEL) == total - embeddings


@pytest.mark.parametrize("unit", ["query", "kv_group"])
@pytest.mark.parametrize("sparsity", [0.1, 0.25, 0.5])
def test_per_block_widths_meet_the_target_within_one_channel_per_block(sparsity, unit):
    blocks = tuple(range(2, 11))
    plan = make_plan(DEEP, sparsity, blocks, unit, "per-block")
    removed = sum(
        plan.steps[i] * plan.costs[i].steps(unit)[1] + plan.channels[i] * plan.costs[i].channel
        for i in blocks
    )
    assert abs(removed - plan.target) <= plan.costs[2].channel
    assert plan.target == round(sparsity * count_params(DEEP))
    # the same share in every block (up to one channel), attention in whole GQA steps
    assert max(plan.channels.values()) - min(plan.channels.values()) <= 1
    assert len(set(plan.steps.values())) == 1


def test_per_block_pruning_gives_valid_blocks_of_the_planned_widths():
    params = random_params(MODEL)
    recipe = StructuredRecipe(importance="l2", sparsity=0.3, block_range=(0, 3))
    result = prune_structured(MODEL, params, None, recipe)
    plan = make_plan(MODEL, 0.3, (0, 1, 2), "query", "per-block")
    for i, keep in result.keeps.items():
        keep.check(TINY_GQA.layer_widths(i))
        assert len(keep.mlp) == TINY_GQA.intermediate_size - plan.channels[i]
    assert result.report["removed_fraction"] == pytest.approx(0.3, abs=0.02)


@pytest.mark.parametrize("importance", ["l1", "random"])
def test_global_ranking_meets_the_target_and_keeps_a_unit_of_each_kind(importance):
    params = random_params(MODEL)
    recipe = StructuredRecipe(
        importance=importance, sparsity=0.6, allocation="global", block_range=(0, 3)
    )
    result = prune_structured(MODEL, params, None, recipe)
    assert result.report["removed_fraction"] == pytest.approx(0.6, abs=0.02)
    for i, keep in result.keeps.items():
        keep.check(TINY_GQA.layer_widths(i))  # at least a head per group and one channel


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sparsity": 0.0}, r"sparsity must be .* in \(0, 1\)"),
        ({"sparsity": 1.0}, r"sparsity must be .* in \(0, 1\)"),
        ({"sparsity": -0.2}, r"sparsity must be .* in \(0, 1\)"),
        ({"sparsity": "half"}, r"sparsity must be .* in \(0, 1\)"),
        ({"method": "llm_pruner"}, "unknown structured method 'llm_pruner'"),
        ({"importance": "taylor"}, "unknown importance 'taylor'"),
        ({"reduction": "median"}, "unknown reduction 'median'"),
        ({"allocation": "owl"}, "unknown allocation 'owl'"),
        ({"attention_unit": "head"}, "unknown attention_unit 'head'"),
        ({"block_range": (3, 3)}, "0 <= start < end"),
        ({"nsamples": 0}, "nsamples must be a positive integer"),
        ({"method": "flap", "importance": "vector"}, "importance applies to llm-pruner"),
    ],
)
def test_a_bad_recipe_is_refused_when_it_is_made(fields, message):
    with pytest.raises(ValueError, match=message):
        StructuredRecipe(**fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sparsity": 0.9, "block_range": (1, 2)}, r"impossible .* at most \d+\.\d% can go"),
        ({"sparsity": 0.2, "block_range": (0, 9)}, "reaches past the model's 3 blocks"),
    ],
)
def test_impossible_widths_fail_before_any_work(fields, message):
    # No calibration windows are given although the vector importance needs them: the plan's
    # error comes first, so nothing was computed.
    recipe = StructuredRecipe(importance="vector", **fields)
    with pytest.raises(ValueError, match=message):
        prune_structured(MODEL, None, None, recipe)


def test_a_missing_calibration_set_is_named():
    with pytest.raises(ValueError, match="needs calibration windows"):
        prune_structured(MODEL, random_params(MODEL), None, StructuredRecipe(sparsity=0.2))


def test_recipes_round_trip_through_dicts():
    recipe = StructuredRecipe(
        method="flap", sparsity=0.5, block_range=(1, 3), attention_unit="kv_group"
    )
    again = StructuredRecipe.from_dict(recipe.to_dict())
    assert again == recipe and again.nsamples == 64 and again.allocation == "global"
    with pytest.raises(ValueError, match="unknown structured recipe fields"):
        StructuredRecipe.from_dict({"sparsity": 0.2, "targets": ".*"})


def test_llm_pruner_defaults_to_element1_as_the_reference_commands():
    """Upstream's documented commands use ``--taylor param_first`` (element1); ours too."""
    assert StructuredRecipe(method="llm-pruner").importance == "element1"
    assert StructuredRecipe(method="flap").importance is None
