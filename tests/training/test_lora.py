"""LoRA: a separate adapter tree; merged ≡ unmerged forward; the masked merge keeps the masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_models import TINY_LLAMA

from jaxprune.core.paths import flat_leaves, get_leaf, set_leaves
from jaxprune.models import LanguageModel
from jaxprune.training.lora import (
    LoraConfig,
    adapters,
    init_lora,
    lora_logits,
    merge,
    target_paths,
    unmerge,
)

MODEL = LanguageModel(TINY_LLAMA)
TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 64, size=(2, 12)), jnp.int32)


def trained_lora(params, config, seed=1):
    """Adapters with non-zero B, as after some training."""
    lora = init_lora(MODEL, params, config, jax.random.key(0))
    return jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(seed), x.shape), lora)


def random_masks(params, density=0.4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        path: jnp.asarray(rng.random(np.shape(get_leaf(params, path))) < density)
        for path in target_paths(MODEL, params, LoraConfig())
    }


def test_default_targets_are_the_seven_linears_of_every_block():
    params = MODEL.init_params(0)
    paths = target_paths(MODEL, params, LoraConfig())
    assert len(paths) == 7 * TINY_LLAMA.num_hidden_layers
    lora = init_lora(MODEL, params, LoraConfig(rank=4), jax.random.key(0))
    a, b = adapters(lora)["layers/1/mlp/down_proj/kernel"]
    assert a.shape == (64, 4) and b.shape == (4, 32) and not b.any()


def test_regex_targets_and_ignore():
    params = MODEL.init_params(0)
    config = LoraConfig(targets=r"layers/\d+/self_attn/\w+/kernel", ignore=r".*/o_proj/kernel")
    assert sorted(target_paths(MODEL, params, config)) == sorted(
        f"layers/{i}/self_attn/{n}_proj/kernel" for i in (0, 1) for n in "qkv"
    )


def test_fresh_adapters_leave_the_model_unchanged_and_params_untouched():
    params = MODEL.init_params(0)
    before = jax.tree.map(np.asarray, params)
    lora = init_lora(MODEL, params, LoraConfig(), jax.random.key(0))
    out = lora_logits(MODEL, params, lora, TOKENS, LoraConfig())
    np.testing.assert_allclose(out, MODEL.logits(params, TOKENS), atol=1e-6)
    for path, leaf in flat_leaves(before).items():
        np.testing.assert_array_equal(leaf, np.asarray(flat_leaves(params)[path]))


def test_merged_forward_equals_unmerged_forward():
    params, config = MODEL.init_params(0), LoraConfig(rank=4, alpha=8.0)
    lora = trained_lora(params, config)
    unmerged = jax.jit(lambda p, ad: lora_logits(MODEL, p, ad, TOKENS, config))(params, lora)
    merged = MODEL.logits(merge(params, lora, config), TOKENS)
    assert np.abs(np.asarray(unmerged) - np.asarray(MODEL.logits(params, TOKENS))).max() > 1e-2
    np.testing.assert_allclose(unmerged, merged, atol=2e-5)


def test_merge_adds_scaled_low_rank_product_computed_in_numpy():
    params, config = MODEL.init_params(0), LoraConfig(rank=2, alpha=6.0)
    lora = trained_lora(params, config)
    merged = merge(params, lora, config)
    path = "layers/0/self_attn/q_proj/kernel"
    a, b = (np.asarray(x, np.float64) for x in adapters(lora)[path])
    expected = np.asarray(get_leaf(params, path), np.float64) + 3.0 * a @ b
    np.testing.assert_allclose(get_leaf(merged, path), expected, atol=1e-6)


def test_masked_merge_keeps_every_pruned_entry_zero_and_unmerges_exactly():
    params, config = MODEL.init_params(0), LoraConfig(rank=4)
    keep = random_masks(params)
    pruned = set_leaves(params, {p: jnp.where(m, get_leaf(params, p), 0) for p, m in keep.items()})
    lora = trained_lora(pruned, config)
    merged = merge(pruned, lora, config, masks=keep)
    for path, mask in keep.items():
        kernel = np.asarray(get_leaf(merged, path))
        assert not kernel[~np.asarray(mask)].any()
        assert np.count_nonzero(kernel) <= int(np.asarray(mask).sum())
    back = unmerge(merged, lora, config, masks=keep)
    for path in keep:
        np.testing.assert_allclose(get_leaf(back, path), get_leaf(pruned, path), atol=1e-6)


def test_unmerge_inverts_a_plain_merge():
    params, config = MODEL.init_params(0), LoraConfig(rank=3)
    lora = trained_lora(params, config)
    back = unmerge(merge(params, lora, config), lora, config)
    for path, leaf in flat_leaves(params).items():
        np.testing.assert_allclose(flat_leaves(back)[path], leaf, atol=1e-6)


def test_dropout_changes_training_forward_only_with_a_key():
    params, config = MODEL.init_params(0), LoraConfig(rank=4, dropout=0.5)
    lora = trained_lora(params, config)
    plain = lora_logits(MODEL, params, lora, TOKENS, config)
    dropped = lora_logits(MODEL, params, lora, TOKENS, config, dropout_key=jax.random.key(3))
    np.testing.assert_allclose(plain, MODEL.logits(merge(params, lora, config), TOKENS), atol=2e-5)
    assert np.abs(np.asarray(plain) - np.asarray(dropped)).max() > 1e-3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rank=0), "rank must be a positive integer"),
        (dict(rank=-2), "rank must be a positive integer"),
        (dict(dropout=1.0), "dropout"),
        (dict(alpha=0.0), "alpha"),
    ],
)
def test_bad_configs_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoraConfig(**kwargs)


def test_targets_that_match_nothing_or_are_not_kernels_are_errors():
    params = MODEL.init_params(0)
    with pytest.raises(ValueError, match="matches no parameter"):
        target_paths(MODEL, params, LoraConfig(targets=r"layers/\d+/nope/kernel"))
    with pytest.raises(ValueError, match="2-D linear kernels"):
        target_paths(MODEL, params, LoraConfig(targets=r"layers/\d+/input_layernorm/scale"))
