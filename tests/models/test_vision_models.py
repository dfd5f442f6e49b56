"""Vision models: NNX modules equal plain-JAX references, BatchNorm handled functionally,
channel groups consistent with the leaves, FLOPs by hand, configs round-trip."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import vision_reference as ref

from jaxprune.core.paths import flat_leaves
from jaxprune.models.vision import MLPConfig, ResNetConfig, VGGConfig, VisionModel

CONFIGS = {
    "mlp": MLPConfig(hidden=(12, 8), image_size=8),
    "vgg": VGGConfig(widths=(4, "M", 6, "M", 8), image_size=8),
    "resnet": ResNetConfig(widths=(4, 6, 8), blocks=2, image_size=8),
}


def images(n=5, size=8, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, size, size, 1)), jnp.float32)


def trained_stats(model, params, stats):
    """BatchNorm statistics moved away from (0, 1) by a few training-mode passes."""
    for seed in range(3):
        _, stats = model.apply(params, stats, 2.0 * images(8, seed=seed) + 1.0, train=True)
    return stats


def reference_logits(config, params, stats, x, zero=None):
    if isinstance(config, MLPConfig):
        return ref.mlp(config, params, x, zero)
    forward = ref.vgg if isinstance(config, VGGConfig) else ref.resnet
    return forward(config, params, stats, x, zero)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_nnx_model_equals_the_plain_reference(name):
    model = VisionModel(CONFIGS[name])
    params, stats = model.init(0)
    stats = trained_stats(model, params, stats)
    logits, same = model.apply(params, stats, images())
    np.testing.assert_allclose(
        logits, reference_logits(model.config, params, stats, images()), atol=2e-5
    )
    jax.tree.map(np.testing.assert_array_equal, same, stats)  # inference leaves them alone


def test_training_mode_normalises_with_the_batch_and_updates_running_statistics():
    model = VisionModel(CONFIGS["vgg"])
    params, stats = model.init(0)
    x = 3.0 * images(16) + 2.0
    _, new = model.apply(params, stats, x, train=True)
    conv = jax.lax.conv_general_dilated(
        x, params["convs"][0]["conv"]["kernel"], (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # fmt: skip
    # momentum 0.9: running = 0.9·running + 0.1·batch.
    np.testing.assert_allclose(
        new["convs"][0]["bn"]["mean"], 0.1 * np.asarray(conv).mean((0, 1, 2)), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_group_member_has_the_group_size_on_its_axis(name):
    model = VisionModel(CONFIGS[name])
    params, stats = model.init(0)
    leaves = {**flat_leaves(params), **flat_leaves(stats)}
    _, taps = model.capture(params, stats, images())
    covered = set()
    for group in model.channel_groups():
        assert set(group.producers) <= {p for p, _ in group.members}
        for path, axis in group.members:
            assert leaves[path].shape[axis] == group.size, (group.name, path)
            covered.add(path)
        assert taps[group.activation].shape[-1] == group.size
    # Every BatchNorm vector and every hidden kernel belongs to some group.
    assert {p for p in leaves if "/bn" in p or p.startswith("final_bn")} <= covered


def test_flops_count_multiply_accumulates_by_hand():
    vgg = VisionModel(VGGConfig(widths=(4, "M", 6), image_size=8))
    # conv0: 8·8 positions × 3·3·1·4; conv1: 4·4 × 3·3·4·6; head: 4·4·6 inputs × 10.
    assert vgg.flops() == 64 * 36 + 16 * 216 + 16 * 6 * 10
    resnet = VisionModel(ResNetConfig(widths=(2, 4), blocks=1, image_size=4))
    stem, block0 = 16 * 9 * 2, 16 * (9 * 2 * 2 + 9 * 2 * 2)
    block1 = 4 * (2 * 4 + 9 * 2 * 4 + 9 * 4 * 4)  # shortcut, conv1, conv2 at 2×2
    assert resnet.flops() == stem + block0 + block1 + 4 * 10
    mlp = VisionModel(CONFIGS["mlp"])
    params, _ = mlp.init(0)
    params["layers"][0]["kernel"] = params["layers"][0]["kernel"].at[:10].set(0.0)
    assert mlp.flops(params) == mlp.flops() - 10 * 12


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_configs_round_trip_through_json_dicts(name):
    import json

    model = VisionModel(CONFIGS[name])
    assert VisionModel.from_dict(json.loads(json.dumps(model.to_dict()))) == model


def test_with_widths_resizes_groups_and_refuses_unknown_or_empty_ones():
    model = VisionModel(CONFIGS["resnet"])
    small = model.with_widths({"stage1": 3, "blocks/0/mid": 2})
    assert small.config.widths == (4, 3, 8) and small.config.mids[0] == 2
    with pytest.raises(ValueError, match="no channel groups"):
        model.with_widths({"stage9": 2})
    with pytest.raises(ValueError, match="at least one channel"):
        model.with_widths({"stage1": 0})


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="mids"):
        ResNetConfig(widths=(4, 8), blocks=2, mids=(4, 4, 8))
    with pytest.raises(ValueError, match="conv width"):
        VGGConfig(widths=("M",))
    with pytest.raises(ValueError, match="vision family"):
        VisionModel.from_dict({"family": "gpt"})
