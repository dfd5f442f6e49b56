"""BatchNorm-γ export: the removed channels' relu(β) folded forward, so the smaller model computes
what the γ-masked model computes (exactly through the head and 1×1 convolutions, at interior
positions through padded 3×3 convolutions); the reference variant's γ clamp."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxprune.core.paths import flat_leaves, set_leaves
from jaxprune.models.vision import MLPConfig, ResNetConfig, VGGConfig, VisionModel
from jaxprune.structured import filters
from jaxprune.structured.bn_export import (
    bn_consumers,
    bn_export,
    bn_masked,
    clamp_scales,
    set_scales,
)

VGG = VGGConfig(widths=(4, "M", 6), image_size=8)
RESNET = ResNetConfig(widths=(4, 6), blocks=1, image_size=8)


@functools.cache
def randomized(config, seed=0):
    """A model with random weights (shapes from ``eval_shape``: ``init`` takes seconds), γ and β
    of both signs and non-trivial statistics. Cached: callers must not modify the trees."""
    model = VisionModel(config)
    params, stats = jax.eval_shape(lambda: model.init(seed))
    rng = np.random.default_rng(seed)
    normal = lambda v: jnp.asarray(0.5 * rng.normal(size=v.shape), jnp.float32)
    positive = lambda v: jnp.asarray(rng.uniform(0.5, 2.0, v.shape), jnp.float32)
    params = jax.tree.map(normal, params)
    stats = set_leaves(stats, {p: positive(v) if p.endswith("var") else normal(v)
                               for p, v in flat_leaves(stats).items()})  # fmt: skip
    return model, params, stats


def keep_half(model, groups):
    return {g.name: np.arange(g.size) % 2 == 0 for g in model.channel_groups() if g.name in groups}


def images(n=5):
    return jnp.asarray(np.random.default_rng(1).normal(size=(n, 8, 8, 1)) + 0.5, jnp.float32)


def apply(model, params, stats):
    return jax.jit(model.apply)(params, stats, images())[0]


def logits_pair(model, params, stats, keep, fold=True):
    masked = apply(model, bn_masked(model, params, keep), stats)
    if fold:
        result = bn_export(model, params, stats, keep)
        small, p, s = result.model, result.params, result.stats
    else:
        small, p, s = filters.shrink(model, params, stats, keep)
    exported = apply(small, p, s)
    return np.asarray(masked), np.asarray(exported)


@pytest.mark.parametrize(("config", "group"), [(VGG, "convs/1"), (RESNET, "stage1")])
def test_export_equals_the_masked_model_when_the_removed_channels_feed_the_head(config, group):
    model, params, stats = randomized(config)
    keep = keep_half(model, {group})
    masked, exported = logits_pair(model, params, stats, keep)
    np.testing.assert_allclose(exported, masked, rtol=1e-5, atol=1e-5)
    # Without the fold the constants are lost: the same check fails.
    masked, unfolded = logits_pair(model, params, stats, keep, fold=False)
    assert np.max(np.abs(unfolded - masked)) > 1e-2


def test_through_a_padded_convolution_the_fold_is_exact_at_interior_positions():
    model, params, stats = randomized(VGG)
    keep = keep_half(model, {"convs/0"})
    _, masked_taps = jax.jit(model.capture)(bn_masked(model, params, keep), stats, images())
    result = bn_export(model, params, stats, keep)
    _, taps = jax.jit(result.model.capture)(result.params, result.stats, images())
    got, want = np.asarray(taps["convs/1:act"]), np.asarray(masked_taps["convs/1:act"])
    np.testing.assert_allclose(got[:, 1:-1, 1:-1], want[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    assert not np.allclose(got[:, 0], want[:, 0], atol=1e-3)  # the border ring: stated, inexact


@pytest.mark.parametrize("config", [VGG, RESNET])
def test_folding_every_group_brings_the_export_closer_to_the_masked_model(config):
    model, params, stats = randomized(config)
    keep = keep_half(model, {g.name for g in model.channel_groups()})
    masked, folded = logits_pair(model, params, stats, keep)
    _, unfolded = logits_pair(model, params, stats, keep, fold=False)
    assert np.mean(np.abs(folded - masked)) < 0.5 * np.mean(np.abs(unfolded - masked))


def test_resnet_constants_reach_every_reader_of_the_stream_until_a_projection():
    routes = bn_consumers(VisionModel(ResNetConfig(widths=(4, 6), blocks=2, image_size=8)))
    # Block 0's conv2 feeds stage 0's stream: read by block 1's bn1 and block 2's (projecting).
    assert routes["blocks/0/bn2"] == [("blocks/0/conv2/kernel", ["blocks/1/bn1", "blocks/2/bn1"])]
    assert routes["blocks/2/bn1"][1] == ("blocks/2/shortcut/kernel", ["blocks/3/bn1", "final_bn"])
    with pytest.raises(ValueError, match="no BatchNorm"):
        bn_consumers(VisionModel(MLPConfig(hidden=(8,), image_size=8)))


def test_reference_variant_starts_scales_at_one_half_and_clamps_them_to_the_unit_interval():
    model, params, _ = randomized(VGG)
    params = set_scales(model, params, 0.5)
    assert np.all(np.asarray(params["convs"][0]["bn"]["scale"]) == 0.5)
    tx = optax.chain(optax.sgd(1.0), clamp_scales(model))
    grads = {p: jnp.full_like(v, -2.0) for p, v in flat_leaves(params).items()}
    grads = set_leaves(params, grads)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["convs"][1]["bn"]["scale"], 1.0)  # 0.5 + 2 clamped
    np.testing.assert_allclose(new["head"]["bias"], np.asarray(params["head"]["bias"]) + 2.0)
