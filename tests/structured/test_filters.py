"""Filter pruning: coupled masks equal zeroing the channels everywhere (through BatchNorm and
residual adds), the physically shrunk model computes the same logits and reloads identically,
exact selection, L1 scores."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import vision_reference as ref

from jaxprune.checkpoint import load_checkpoint, save_checkpoint
from jaxprune.models.vision import MLPConfig, ResNetConfig, VGGConfig, VisionModel
from jaxprune.structured import filters

CONFIGS = {
    "mlp": MLPConfig(hidden=(12, 8), image_size=8),
    "vgg": VGGConfig(widths=(4, "M", 6, "M", 8), image_size=8),
    "resnet": ResNetConfig(widths=(4, 6, 8), blocks=2, image_size=8),
}


def images(n=6, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, 8, 8, 1)), jnp.float32)


def trained(name):
    model = VisionModel(CONFIGS[name])
    params, stats = model.init(0)
    for seed in range(3):
        _, stats = model.apply(params, stats, 2.0 * images(8, seed) + 1.0, train=True)
    return model, params, stats


def random_keep(model, seed=0):
    rng = np.random.default_rng(seed)
    keep = {}
    for group in model.channel_groups():
        k = np.zeros(group.size, bool)
        k[rng.choice(group.size, size=max(1, group.size // 2), replace=False)] = True
        keep[group.name] = k
    return keep


def reference(model, params, stats, x, zero=None):
    if isinstance(model.config, MLPConfig):
        return ref.mlp(model.config, params, x, zero)
    forward = ref.vgg if isinstance(model.config, VGGConfig) else ref.resnet
    return forward(model.config, params, stats, x, zero)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_channel_masks_give_the_outputs_of_zeroing_those_channels(name):
    model, params, stats = trained(name)
    keep = random_keep(model)
    masked = filters.masked_params(model, params, keep)
    got, _ = model.apply(masked, stats, images())
    # The unmasked params, with the channels zeroed wherever they appear (plain-JAX reference).
    want = reference(model, params, stats, images(), zero=keep)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert not np.allclose(got, model.apply(params, stats, images())[0], atol=1e-3)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shrunk_model_matches_the_masked_one_and_reloads_identically(name, tmp_path):
    model, params, stats = trained(name)
    keep = random_keep(model, seed=1)
    small, small_params, small_stats = filters.shrink(model, params, stats, keep)
    for group in small.channel_groups():
        assert group.size == int(keep[group.name].sum())
    logits, _ = small.apply(small_params, small_stats, images())
    masked, _ = model.apply(filters.masked_params(model, params, keep), stats, images())
    np.testing.assert_allclose(logits, masked, atol=2e-5)
    assert small.flops() < model.flops() and small.num_params() < model.num_params()

    save_checkpoint(
        tmp_path / "small", {"params": small_params, "stats": small_stats},
        config={"model": small.to_dict()},
    )  # fmt: skip
    ckpt = load_checkpoint(tmp_path / "small")
    reloaded = VisionModel.from_dict(ckpt.config["model"])
    again, _ = reloaded.apply(ckpt.params["params"], ckpt.params["stats"], images())
    np.testing.assert_array_equal(again, logits)


def test_select_filters_removes_the_exact_count_of_lowest_scores():
    model = VisionModel(CONFIGS["vgg"])
    scores = {"convs/1": np.asarray([3.0, 1.0, 1.0, 5.0, 0.5, 2.0], np.float32)}
    keep = filters.select_filters(model, scores, 0.5)
    np.testing.assert_array_equal(keep["convs/1"], [True, False, False, True, False, True])
    assert keep["convs/0"].all() and keep["convs/2"].all()  # unscored groups stay whole
    keep = filters.select_filters(model, scores, 0.9, min_keep=2)
    assert keep["convs/1"].sum() == 2


def test_l1_scores_sum_absolute_filter_weights_and_combine_residual_producers():
    model, params, _ = trained("resnet")
    scores = filters.l1_scores(model, params)
    kernel = np.asarray(params["blocks"][1]["conv1"]["kernel"])
    np.testing.assert_allclose(scores["blocks/1/mid"], np.abs(kernel).sum((0, 1, 2)), rtol=1e-6)
    stem = np.abs(np.asarray(params["stem"]["kernel"])).sum((0, 1, 2))
    convs = [
        np.abs(np.asarray(params["blocks"][j]["conv2"]["kernel"])).sum((0, 1, 2)) for j in (0, 1)
    ]
    want = sum(s / s.max() for s in [stem, *convs])
    np.testing.assert_allclose(scores["stage0"], want, rtol=1e-6)


def test_prune_filters_reports_flops_and_refuses_bad_requests():
    model, params, stats = trained("vgg")
    result = filters.prune_filters(model, params, stats, filters.l1_scores(model, params), 0.5)
    assert result.flops == result.model.flops() and result.flops_ratio > 1.0
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        filters.select_filters(model, {"convs/0": np.ones(4)}, 1.0)
    with pytest.raises(ValueError, match="unknown groups"):
        filters.select_filters(model, {"convs/9": np.ones(4)}, 0.5)
    with pytest.raises(ValueError, match="shape"):
        filters.select_filters(model, {"convs/0": np.ones(5)}, 0.5)
