"""FLAP: exact fluctuation statistics, the reference's scores, and mean-preserving biases."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from structured_models import TINY_GQA, TINY_OPT, random_params, windows

from jaxprune.core.paths import get_leaf
from jaxprune.models import LanguageModel
from jaxprune.structured import BlockKeep, StructuredRecipe, prune_structured
from jaxprune.structured.flap import (
    Fluctuation,
    block_scores,
    compensation,
    fluctuations,
    standardise,
)

MODEL = LanguageModel(TINY_GQA)


def captured(model, params, tokens, block, tap):
    """The inputs of a tap over all tokens, from one plain forward pass (NumPy, float64)."""
    hidden = model.embed(params, jnp.asarray(tokens))
    for i in range(block):
        hidden = model.block(model.block_params(params, i), hidden)
    _, taps = model.block(model.block_params(params, block), hidden, capture=True)
    x = np.asarray(taps[tap], np.float64)
    return x.reshape(-1, x.shape[-1])


def test_merged_batches_give_the_mean_and_variance_of_all_tokens():
    rng = np.random.default_rng(0)
    batches = [1000.0 + rng.normal(size=(n, 7)) * rng.random(7) for n in (5, 64, 1, 30)]
    stat = Fluctuation.empty(7)
    for b in batches:
        stat = stat.add(jnp.asarray(b, jnp.float32))
    tokens = np.concatenate(batches)
    np.testing.assert_allclose(stat.mean, tokens.mean(0), rtol=1e-6)
    # a mean 1000x the spread: E[x²] - E[x]² in float32 would have lost every digit
    np.testing.assert_allclose(stat.variance, tokens.var(0), rtol=1e-3)


def test_statistics_over_batches_are_those_of_the_captured_inputs():
    params, tokens = random_params(MODEL), windows(n=6)
    stats = fluctuations(MODEL, params, tokens, [2], ("o_in", "down_in"), batch_size=4)
    for stat, tap in zip(stats[2], ("o_in", "down_in"), strict=True):
        x = captured(MODEL, params, tokens, 2, tap)
        np.testing.assert_allclose(stat.mean, x.mean(0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(stat.variance, x.var(0), rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("unit", ["query", "kv_group"])
def test_scores_follow_the_reference_metric_standardised_per_module(unit):
    params, tokens = random_params(MODEL), windows(n=4)
    stats = fluctuations(MODEL, params, tokens, [1], ("o_in", "down_in"))[1]
    block = MODEL.block_params(params, 1)
    outs = ("self_attn/o_proj", "mlp/down_proj")
    attention, mlp = block_scores(block, stats, outs, 8, 3, unit)
    metric = []
    for tap, path in zip(("o_in", "down_in"), outs, strict=True):
        x = captured(MODEL, params, tokens, 1, tap)
        w = np.asarray(get_leaf(block, path)["kernel"], np.float64)
        metric.append(x.var(0) * (w**2).sum(1))  # WIFV: Var(x_j) · ‖W_j,:‖²
    z = lambda m: (m - m.mean()) / m.std(ddof=1)  # noqa: E731
    per_unit = 8 if unit == "query" else 16
    expected = z(metric[0] ** 2).reshape(-1, per_unit).mean(1)
    np.testing.assert_allclose(attention, expected, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(mlp, z(metric[1]), rtol=1e-3, atol=1e-4)


def test_compensation_keeps_the_mean_output_of_both_projections():
    params, tokens = random_params(MODEL), windows(n=4)
    stats = fluctuations(MODEL, params, tokens, [0], ("o_in", "down_in"))[0]
    block = MODEL.block_params(params, 0)
    keep = BlockKeep((0, 2, 4), (0, 1, 2), tuple(range(0, 40, 3)))
    outs = ("self_attn/o_proj", "mlp/down_proj")
    biases = compensation(block, stats, outs, keep, 8)
    kept = (np.concatenate([np.arange(h * 8, h * 8 + 8) for h in keep.heads]), np.array(keep.mlp))
    for tap, path, bias, idx in zip(("o_in", "down_in"), outs, biases, kept, strict=True):
        x = captured(MODEL, params, tokens, 0, tap)
        w = np.asarray(get_leaf(block, path)["kernel"], np.float64)
        dense, pruned = x @ w, x[:, idx] @ w[idx] + bias
        np.testing.assert_allclose(pruned.mean(0), dense.mean(0), atol=1e-5)
        assert np.abs(x[:, idx] @ w[idx] - dense).mean() > 1e-3  # without the bias it is off


def test_standardising_a_constant_gives_zeros_not_nans():
    assert standardise(np.full(5, 3.0)).tolist() == [0.0] * 5


@pytest.mark.parametrize("config", [TINY_GQA, TINY_OPT], ids=["llama", "opt"])
def test_flap_prunes_to_the_target_with_an_adaptive_structure(config):
    model = LanguageModel(config)
    params = random_params(model)
    result = prune_structured(
        model, params, windows(n=4), StructuredRecipe(method="flap", sparsity=0.3)
    )
    report = result.report
    assert report["removed_fraction"] == pytest.approx(0.3, abs=0.01)
    assert report["params_after"] == sum(np.size(x) for x in _non_embedding(result.params))
    if config is TINY_GQA:  # LLaMA gained biases; they are paid for by more removed weights
        assert result.model.config.attention_bias and result.model.config.mlp_bias
        assert report["added_bias_params"] > 0
    bias = get_leaf(result.params, "layers/0/" + model.family.structure.mlp_out + "/bias")
    assert np.abs(np.asarray(bias)).max() > 0


def _non_embedding(params):
    import jax

    skip = ("embed_tokens", "embed_positions", "lm_head")
    return jax.tree.leaves({k: v for k, v in params.items() if k not in skip})
