"""A shrunk model is a model: it saves, reloads, evaluates, generates and prunes again."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from structured_models import TINY_GQA, TINY_OPT, logits, random_params, windows

import jaxprune as jp
from jaxprune.models import LanguageModel, LlamaConfig, OPTConfig, config_from_dict, config_to_dict
from jaxprune.models.base import LayerWidths
from jaxprune.models.generate import greedy_generate
from jaxprune.models.loaders import Pretrained, load_pretrained, save_pruned
from jaxprune.structured import StructuredRecipe, prune_structured


@pytest.fixture(scope="module", params=["llm-pruner", "flap"])
def shrunk(request):
    model = LanguageModel(TINY_GQA)
    params = random_params(model)
    recipe = StructuredRecipe(method=request.param, sparsity=0.4, nsamples=4, seqlen=12)
    return model, params, prune_structured(model, params, windows(n=4), recipe)


def test_shrink_save_reload_gives_identical_logits(shrunk, tmp_path):
    _, _, result = shrunk
    pre = Pretrained(result.model, result.params, None, "shrunk")
    save_pruned(tmp_path / "m", pre, result.params, report=result.report)
    again = load_pretrained(tmp_path / "m")
    assert again.model.config == result.model.config
    tokens = windows(n=2)
    np.testing.assert_array_equal(
        logits(again.model, again.params, tokens), logits(result.model, result.params, tokens)
    )
    assert jp.structured.count_params(again.model, again.params) == result.report["params_after"]


def test_a_shrunk_model_evaluates_generates_and_prunes_again(shrunk):
    _, _, result = shrunk
    model, params = result.model, result.params
    ppl = jp.perplexity(model, params, windows(n=3)).ppl
    assert np.isfinite(ppl)
    assert len(greedy_generate(model, params, [1, 2, 3], 4)) == 4
    pruned = jp.prune(model, params, windows(n=4), jp.Recipe(method="wanda", sparsity=0.5))
    for i in range(model.num_blocks):
        down = np.asarray(pruned.params["layers"][i]["mlp"]["down_proj"]["kernel"])
        assert down.shape[0] == model.config.layer_widths(i).mlp
        # Wanda: ⌊0.5 · inputs⌋ zeros in every output column of the narrower kernel
        assert ((down == 0).sum(axis=0) == down.shape[0] // 2).all()
    again = prune_structured(model, params, None, StructuredRecipe(importance="l2", sparsity=0.2))
    assert again.report["params_after"] < result.report["params_after"]


def test_the_shrunk_model_is_faster_in_flops_not_only_in_parameters(shrunk):
    model, params, result = shrunk
    before = sum(w.heads + w.mlp for w in map(model.config.layer_widths, range(3)))
    after = sum(w.heads + w.mlp for w in map(result.model.config.layer_widths, range(3)))
    assert after < before
    leaves = result.params["layers"][1]["self_attn"]["q_proj"]["kernel"]
    assert leaves.shape[1] == result.model.config.layer_widths(1).heads * TINY_GQA.head_dim


def test_per_layer_configs_round_trip_through_json():
    widths = [LayerWidths(6, 3, 40), LayerWidths(2, 1, 7), LayerWidths(3, 3, 1)]
    for config in (
        TINY_GQA.with_layer_widths(widths).with_output_biases(),
        TINY_OPT.with_layer_widths([LayerWidths(h, h, f) for h, f in ((4, 48), (1, 3))]),
    ):
        again = config_from_dict(json.loads(json.dumps(config_to_dict(config))))
        assert again == config and hash(again) == hash(config)


def test_configs_saved_before_per_layer_widths_still_load():
    old = {k: v for k, v in config_to_dict(TINY_GQA).items()}
    for field in ("num_heads_per_layer", "num_kv_heads_per_layer", "intermediate_sizes"):
        del old[field]
    del old["attention_bias"], old["mlp_bias"]
    config = config_from_dict(old)
    assert config == TINY_GQA and config.layer_widths(2) == LayerWidths(6, 3, 40)


@pytest.mark.parametrize(
    ("config", "field", "value", "message"),
    [
        (TINY_GQA, "intermediate_sizes", (4, 4), r"one positive int per layer \(3\)"),
        (TINY_GQA, "num_heads_per_layer", (6, 0, 6), "one positive int per layer"),
        (TINY_GQA, "num_heads_per_layer", (6, 5, 6), "must be a multiple of .* in layer 1"),
        (TINY_OPT, "ffn_dims", (3,), r"one positive int per layer \(2\)"),
    ],
)
def test_bad_per_layer_widths_are_named(config, field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(config, **{field: value})


def test_an_opt_model_shrinks_and_reloads_with_its_biases(tmp_path):
    model = LanguageModel(TINY_OPT)
    params = random_params(model)
    result = prune_structured(
        model, params, windows(n=4), StructuredRecipe(method="flap", sparsity=0.3, seqlen=12)
    )
    assert isinstance(result.model.config, OPTConfig)
    save_pruned(tmp_path / "m", Pretrained(result.model, result.params, None, "x"), result.params)
    again = load_pretrained(tmp_path / "m")
    tokens = windows(n=2)
    np.testing.assert_array_equal(
        logits(again.model, again.params, tokens), logits(result.model, result.params, tokens)
    )


def test_llama_biases_change_the_output_exactly_by_the_bias():
    config = dataclasses.replace(TINY_GQA, mlp_bias=True)
    model = LanguageModel(config)
    params = random_params(LanguageModel(TINY_GQA))
    zero = jnp.zeros(48)
    for i in range(3):
        mlp = params["layers"][i]["mlp"]
        for name in ("gate_proj", "up_proj"):
            mlp[name]["bias"] = jnp.zeros(40)
        mlp["down_proj"]["bias"] = zero
    base = model.block(model.block_params(params, 0), jnp.ones((1, 4, 48)))
    params["layers"][0]["mlp"]["down_proj"]["bias"] = zero + 0.5
    moved = model.block(model.block_params(params, 0), jnp.ones((1, 4, 48)))
    np.testing.assert_allclose(moved - base, 0.5, atol=1e-6)
    assert LlamaConfig.from_dict({**config_to_dict(config)}).mlp_bias
