"""Uniform widths: equal blocks, MLP widths a multiple, and transformers loads the result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from structured_models import logits, random_params, windows
from transformers import AutoModelForCausalLM

from jaxprune.models import LanguageModel, LlamaConfig
from jaxprune.models.base import LayerWidths
from jaxprune.models.export import export_hf
from jaxprune.structured import StructuredRecipe, count_params, make_plan, prune_structured

# 4 blocks, 2 key/value groups of 3 query heads, an MLP wide enough for a multiple of 16.
CONFIG = LlamaConfig(
    vocab_size=64,
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=4,
    num_attention_heads=6,
    num_key_value_heads=2,
)
MODEL = LanguageModel(CONFIG)


def torch_logits(directory, tokens):
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.numpy()


@pytest.mark.parametrize("multiple", [16, 32])
@pytest.mark.parametrize("sparsity", [0.2, 0.5])
def test_uniform_plans_give_every_block_the_same_removal_and_a_multiple(sparsity, multiple):
    plan = make_plan(MODEL, sparsity, range(4), "query", "per-block", multiple=multiple)
    assert len(set(plan.steps.values())) == 1 and len(set(plan.channels.values())) == 1
    kept = 96 - plan.channels[0]
    assert kept % multiple == 0 and kept >= multiple
    # rounding the MLP to the multiple moves the removal by at most half a multiple per block
    c = plan.costs[0]
    removed = 4 * (plan.steps[0] * c.steps("query")[1] + plan.channels[0] * c.channel)
    assert abs(removed - plan.target) <= 4 * (multiple / 2) * c.channel


@pytest.mark.parametrize("method", ["llm-pruner", "flap"])
def test_a_uniform_prune_exports_to_a_standard_config_transformers_runs(method, tmp_path):
    params = random_params(MODEL)
    scores = {"importance": "l2"} if method == "llm-pruner" else {}  # no gradients: fast
    recipe = StructuredRecipe(
        method=method, sparsity=0.3, uniform=True, mlp_multiple=16, nsamples=4, seqlen=12, **scores
    )
    assert recipe.blocks(4) == (0, 1, 2, 3)  # every block, even for llm-pruner
    result = prune_structured(MODEL, params, windows(n=4), recipe)
    widths = {result.model.config.layer_widths(i) for i in range(4)}
    assert len(widths) == 1
    (w,) = widths
    assert w.mlp % 16 == 0 and w.mlp < 96 and w.heads % w.kv_heads == 0
    assert result.report["params_after"] < count_params(MODEL)
    summary = export_hf(tmp_path / "hf", result.model, result.params)
    assert summary["config"]["intermediate_size"] == w.mlp
    assert summary["config"]["num_attention_heads"] == w.heads
    tokens = windows(n=2, seqlen=16)
    ours = logits(result.model, result.params, tokens)
    assert np.abs(ours).max() > 0.5
    np.testing.assert_allclose(torch_logits(tmp_path / "hf", tokens), ours, atol=1e-4)


def test_the_adaptive_default_still_differs_between_blocks():
    """The contrast: without uniform, LLM-Pruner keeps its first and last blocks dense."""
    result = prune_structured(
        MODEL, random_params(MODEL), None, StructuredRecipe(importance="l2", sparsity=0.2)
    )
    assert len({result.model.config.layer_widths(i) for i in range(4)}) > 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"uniform": True, "allocation": "global"}, "drop allocation='global'"),
        ({"mlp_multiple": 32}, "pass uniform=True"),
        ({"uniform": True, "mlp_multiple": 0}, "mlp_multiple must be a positive integer"),
    ],
)
def test_bad_uniform_recipes_are_refused_when_made(fields, message):
    with pytest.raises(ValueError, match=message):
        StructuredRecipe(**fields)


def test_uniform_widths_refuse_partial_ranges_uneven_models_and_big_multiples():
    with pytest.raises(ValueError, match="every block pruned"):
        make_plan(MODEL, 0.2, range(1, 4), "query", "per-block", multiple=16)
    with pytest.raises(ValueError, match="must be in 1..96"):
        make_plan(MODEL, 0.2, range(4), "query", "per-block", multiple=128)
    uneven = LanguageModel(
        CONFIG.with_layer_widths([LayerWidths(6, 2, 96)] * 3 + [LayerWidths(6, 2, 48)])
    )
    with pytest.raises(ValueError, match="equal widths before pruning; block 3"):
        make_plan(uneven, 0.2, range(4), "query", "per-block", multiple=16)


def test_uniform_is_refused_for_unstructured_methods(capsys):
    from jaxprune.cli import main

    assert main(["prune", "--method", "wanda", "--uniform", "--model", "x"]) == 2
    assert "--uniform apply to --method llm-pruner or flap only" in capsys.readouterr().err


def test_uniform_recipes_round_trip():
    recipe = StructuredRecipe(method="flap", uniform=True, mlp_multiple=8)
    assert StructuredRecipe.from_dict(recipe.to_dict()) == recipe
    assert recipe.allocation == "per-block"
