"""Coupled groups: removal is exactly zeroing; GQA stays valid; LLM-Pruner's group reductions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structured_models import CONFIGS, TINY_GQA, logits, random_params, windows

from jaxprune.models import LanguageModel
from jaxprune.models.base import LayerWidths
from jaxprune.structured import BlockKeep, shrink, zero_groups
from jaxprune.structured.groups import attention_steps, reduce_members


def random_keeps(model: LanguageModel, seed: int, unit: str) -> dict[int, BlockKeep]:
    """A valid random keep per block: some steps of ``unit`` and a random half of the MLP."""
    rng = np.random.default_rng(seed)
    keeps = {}
    for i in range(model.num_blocks):
        widths = model.config.layer_widths(i)
        steps = attention_steps(
            unit, rng.random(widths.heads if unit == "query" else widths.kv_heads), widths, 1, 1
        )
        heads, kv_heads = steps.keep(int(rng.integers(0, len(steps.heads) + 1)), widths)
        mlp = np.sort(rng.choice(widths.mlp, size=widths.mlp // 2, replace=False))
        keeps[i] = BlockKeep(heads, kv_heads, tuple(int(j) for j in mlp))
    return keeps


@pytest.mark.parametrize("unit", ["query", "kv_group"])
@pytest.mark.parametrize("name", ["llama", "gqa", "opt"])
def test_removing_groups_gives_the_logits_of_zeroing_them(name, unit):
    model = LanguageModel(CONFIGS[name])
    params = random_params(model)
    keeps = random_keeps(model, seed=1, unit=unit)
    smaller, small_params = shrink(model, params, keeps)
    tokens = windows(vocab=model.config.vocab_size)
    zeroed = logits(model, zero_groups(model, params, keeps), tokens)
    np.testing.assert_allclose(logits(smaller, small_params, tokens), zeroed, atol=2e-5, rtol=0)
    # ... and removing something does change the model (the test can fail)
    assert np.abs(zeroed - logits(model, params, tokens)).max() > 1e-2
    assert [smaller.config.layer_widths(i) for i in keeps] == [k.widths for k in keeps.values()]


def test_query_heads_go_evenly_across_key_value_groups_and_key_value_heads_stay():
    widths = LayerWidths(heads=6, kv_heads=3, mlp=8)
    scores = np.array([5.0, 1.0, 0.5, 2.0, 3.0, 4.0])  # group 0: heads 0,1; 1: 2,3; 2: 4,5
    steps = attention_steps("query", scores, widths, head_cost=10, kv_cost=7)
    assert steps.heads == ((1, 2, 4),)  # the weakest head of every group, one step
    assert steps.scores.tolist() == [1.0 + 0.5 + 3.0] and steps.costs.tolist() == [30]
    heads, kv_heads = steps.keep(1, widths)
    assert heads == (0, 3, 5) and kv_heads == (0, 1, 2)
    BlockKeep(heads, kv_heads, tuple(range(8))).check(widths)


def test_a_key_value_group_goes_with_all_its_query_heads():
    widths = LayerWidths(heads=6, kv_heads=3, mlp=8)
    steps = attention_steps("kv_group", np.array([3.0, 1.0, 2.0]), widths, head_cost=10, kv_cost=7)
    assert steps.heads == ((2, 3), (4, 5)) and steps.kv_heads == ((1,), (2,))
    assert steps.costs.tolist() == [27, 27]  # one group is always kept
    assert steps.keep(1, widths) == ((0, 1, 4, 5), (0, 2))


def test_without_grouped_query_attention_a_query_head_is_its_key_value_head():
    widths = LayerWidths(heads=4, kv_heads=4, mlp=8)
    query = attention_steps("query", np.array([4.0, 1.0, 3.0, 2.0]), widths, 10, 7)
    kv = attention_steps("kv_group", np.array([4.0, 1.0, 3.0, 2.0]), widths, 10, 7)
    assert query.heads == kv.heads == ((1,), (3,), (2,))
    assert query.kv_heads == kv.kv_heads


@settings(max_examples=60, deadline=None)
@given(
    kv_heads=st.integers(1, 4),
    groups=st.integers(1, 4),
    unit=st.sampled_from(["query", "kv_group"]),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_every_number_of_steps_leaves_a_valid_grouped_query_block(
    kv_heads, groups, unit, seed, data
):
    widths = LayerWidths(kv_heads * groups, kv_heads, 3)
    count = widths.heads if unit == "query" else kv_heads
    steps = attention_steps(unit, np.random.default_rng(seed).random(count), widths, 1, 1)
    taken = data.draw(st.integers(0, len(steps.heads)))
    heads, kept_kv = steps.keep(taken, widths)
    BlockKeep(heads, kept_kv, (0,)).check(widths)  # raises if uneven or orphaned
    per_group = [sum(1 for h in heads if h // groups == g) for g in kept_kv]
    assert len(set(per_group)) == 1 and per_group[0] >= 1


@pytest.mark.parametrize(
    ("heads", "kv_heads", "message"),
    [
        ((0, 1, 2), (0, 1, 2), "do not split evenly"),  # group 0 keeps 2, group 1 keeps 1
        ((0, 2), (1,), "do not split evenly"),  # head 0 belongs to the removed group 0
        ((1, 0), (0, 1, 2), "not sorted"),
        ((), (0,), "not sorted"),
        ((0, 1, 6), (0, 1, 2), r"in \[0, 6\)"),
    ],
)
def test_an_invalid_keep_is_refused_naming_the_problem(heads, kv_heads, message):
    with pytest.raises(ValueError, match=message):
        BlockKeep(heads, kv_heads, (0,)).check(LayerWidths(6, 3, 4))


def test_shrink_refuses_a_keep_that_breaks_grouped_query_attention():
    model = LanguageModel(TINY_GQA)
    with pytest.raises(ValueError, match="do not split evenly"):
        shrink(model, random_params(model), {0: BlockKeep((0, 1, 2), (0, 1, 2), (0, 1))})


@pytest.mark.parametrize("reduction", ["sum", "mean", "max", "prod", "first"])
def test_group_reductions_fold_wide_members_then_reduce_channel_by_channel(reduction):
    rng = np.random.default_rng(0)
    q, k, o = rng.random(2 * 3 * 4), rng.random(2 * 4), rng.random(2 * 3 * 4)  # 2 units, G=3, c=4
    aligned = np.stack([q.reshape(2, 3, 4).sum(1), k.reshape(2, 4), o.reshape(2, 3, 4).sum(1)])
    expected = {
        "sum": aligned.sum(0),
        "mean": aligned.mean(0),
        "max": aligned.max(0),
        "prod": aligned.prod(0),
        "first": aligned[0],
    }[reduction].sum(1)
    np.testing.assert_allclose(reduce_members([q, k, o], 2, reduction), expected, rtol=1e-12)


def test_an_unknown_reduction_is_named():
    with pytest.raises(ValueError, match="unknown group reduction 'median'"):
        reduce_members([np.ones(4)], 4, "median")
