"""prune_tokens on a tiny ViT: static schedules, one compile, CLS kept, keep ratio 1 exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune.models.vit import ViTConfig, ViTModel
from jaxprune.token_pruning import (
    TOKEN_METHODS,
    TokenSchedule,
    block_flops,
    prune_tokens,
    schedule_for_flop_reduction,
)

METHODS = sorted(TOKEN_METHODS)
CONFIG = ViTConfig(
    image_size=16,
    patch_size=2,
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=64,
    layer_norm_eps=1e-6,
    layer_scale=True,
)


@pytest.fixture(scope="module")
def vit():
    model = ViTModel(CONFIG)
    return model, model.init_params(seed=0)


def _images(n=3, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((n, 16, 16, 3)), jnp.float32)


@pytest.mark.parametrize("method", METHODS)
def test_keep_ratio_one_is_bit_identical_to_the_dense_model(vit, method):
    model, params = vit
    dense = np.asarray(jax.jit(model.tokens)(params, _images()))
    pruned = prune_tokens(model, {1: 1.0, 2: 1.0, 3: 1.0}, method)
    assert pruned.schedule.counts == (65, 65, 65, 65)
    np.testing.assert_array_equal(np.asarray(pruned.tokens(params, _images())), dense)


@pytest.mark.parametrize("method", METHODS)
def test_pruned_forward_follows_the_schedule_and_compiles_once(vit, method):
    model, params = vit
    pruned = prune_tokens(model, {1: 0.75, 3: 0.5}, method)
    assert pruned.schedule.counts == (65, 49, 49, 25)
    out = pruned.tokens(params, _images(seed=1))
    assert out.shape == (3, 25, 32) and bool(jnp.isfinite(out).all())
    pruned.tokens(params, _images(seed=2))
    other = jax.tree.map(lambda p: p * 1.01, params)
    pruned.tokens(other, _images(seed=3))
    assert pruned.compilations == 1
    assert pruned.features(params, _images()).shape == (3, 32)


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), keep=st.integers(1, 9), prefix=st.sampled_from([1, 2]))
def test_cls_token_is_never_dropped(method, seed, keep, prefix):
    rng = np.random.default_rng(seed)
    b, n, d, h = 2, 18, 8, 2
    x = rng.standard_normal((b, n, d)).astype(np.float32)
    logits = rng.standard_normal((b, h, n, n)) * 3
    logits[..., :prefix] -= 50.0  # nobody attends to the prefix tokens: least "important"
    attn = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    keys = rng.standard_normal((b, n, d)).astype(np.float32)
    taps = {"attn": jnp.asarray(attn, jnp.float32), "keys": jnp.asarray(keys)}
    spec = TOKEN_METHODS[method]
    m = n - prefix
    keep = max(keep, m - spec.max_drop(m))
    out, _ = spec.reduce(
        jnp.asarray(x),
        taps,
        keep,
        prefix=prefix,
        layer=4,
        num_layers=12,
        sizes=None,
        rng=jax.random.key(seed),
        **spec.options,
    )
    assert out.shape == (b, prefix + keep, d)
    np.testing.assert_array_equal(np.asarray(out[:, :prefix]), x[:, :prefix])


@pytest.mark.parametrize("method", ["zero-tprune", "random", "evit"])
def test_dropping_methods_keep_original_tokens_in_order(method):
    b, n, d = 2, 13, 4
    x = np.broadcast_to(np.arange(n, dtype=np.float32)[None, :, None], (b, n, d))
    rng = np.random.default_rng(5)
    attn = rng.random((b, 2, n, n)).astype(np.float32)
    taps = {
        "attn": jnp.asarray(attn / attn.sum(-1, keepdims=True)),
        "keys": jnp.asarray(rng.standard_normal((b, n, 6)), jnp.float32),
    }
    spec = TOKEN_METHODS[method]
    out, _ = spec.reduce(
        jnp.asarray(x),
        taps,
        5,
        prefix=1,
        layer=1,
        num_layers=4,
        sizes=None,
        rng=jax.random.key(0),
        **spec.options,
    )
    ids = np.asarray(out)[:, :, 0]
    assert (np.diff(ids, axis=1) > 0).all() and (ids[:, 0] == 0).all()


def test_tome_merging_exact_duplicates_leaves_the_cls_output_unchanged(vit):
    # Without position embeddings, identical patches stay identical tokens; merging copies with
    # proportional attention (+log size) is exact, so CLS must not move.
    model, params = vit
    params = jax.tree.map(lambda p: p, params)
    params["embeddings"]["position_embeddings"] = jnp.zeros_like(
        params["embeddings"]["position_embeddings"]
    )
    rng = np.random.default_rng(6)
    tile = rng.standard_normal((1, 2, 2, 3)).astype(np.float32)
    image = np.tile(tile, (1, 8, 8, 1))  # 64 identical patches
    image[:, :2, :2] += 1.0  # one different patch: the least similar, so it is never merged
    dense = model.features(params, jnp.asarray(image))
    merged = prune_tokens(model, {1: 0.6, 2: 0.6, 3: 0.6}, "tome")
    assert merged.schedule.counts == (65, 39, 24, 15)
    merged = merged.features(params, image)
    np.testing.assert_allclose(np.asarray(merged), np.asarray(dense), atol=2e-5)


def test_tome_sizes_count_every_original_patch():
    b, n = 1, 11
    x = jnp.asarray(np.random.rand(b, n, 4), jnp.float32)
    taps = {"attn": jnp.ones((b, 2, n, n)) / n, "keys": jnp.asarray(np.random.rand(b, n, 4))}
    out, sizes = TOKEN_METHODS["tome"].reduce(x, taps, 6, prefix=1)
    assert out.shape == (1, 7, 4) and float(sizes.sum()) == n and float(sizes[0, 0]) == 1.0
    out, sizes = TOKEN_METHODS["tome"].reduce(
        out,
        {**taps, "attn": taps["attn"][..., :7, :7], "keys": taps["keys"][:, :7]},
        3,
        prefix=1,
        sizes=sizes,
    )
    assert float(sizes.sum()) == n


def test_random_drop_depends_on_the_seed_only(vit):
    model, params = vit
    a = prune_tokens(model, {2: 0.3}, "random", seed=0).tokens(params, _images())
    b = prune_tokens(model, {2: 0.3}, "random", seed=0).tokens(params, _images())
    c = prune_tokens(model, {2: 0.3}, "random", seed=1).tokens(params, _images())
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_schedule_flops_count_blocks_and_patch_embedding():
    s = TokenSchedule.from_keep_ratios(CONFIG, {2: 0.5})
    assert s.counts == (65, 65, 33, 33)
    embed = 2 * 64 * 3 * 4 * 32
    d, m = 32, 64
    per_block = lambda n: 2 * (n * (4 * d * d + 2 * d * m) + 2 * n * n * d)
    assert block_flops(CONFIG, 65) == per_block(65)
    assert s.flops(CONFIG) == embed + 2 * per_block(65) + 2 * per_block(33)
    target = schedule_for_flop_reduction(CONFIG, 0.3, layers=(1, 2, 3))
    assert abs(target.flop_reduction(CONFIG) - 0.3) < 0.02


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        ({0: 0.5}, "before block 0"),
        ({2: 1.5}, r"\(0, 1\]"),
        ({7: 0.5}, "out of range"),
        (lambda: TokenSchedule((65, 70, 70, 70)), "must not grow"),
        (lambda: TokenSchedule((50, 50, 50, 50)), "the model has 65"),
    ],
)
def test_bad_schedules_are_clear_errors(vit, schedule, match):
    with pytest.raises(ValueError, match=match):
        prune_tokens(vit[0], schedule() if callable(schedule) else schedule)


def test_tome_cannot_merge_more_than_half_in_one_step(vit):
    with pytest.raises(ValueError, match="at most 32 of 64"):
        prune_tokens(vit[0], {1: 0.25}, "tome")


def test_unknown_method_and_option_are_clear_errors(vit):
    with pytest.raises(ValueError, match="known: "):
        prune_tokens(vit[0], {1: 0.5}, "magic")
    with pytest.raises(ValueError, match="no option"):
        prune_tokens(vit[0], {1: 0.5}, "evit", iterations=3)
