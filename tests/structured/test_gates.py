"""Polarization gates: binary gates are exactly channel masks, the exported model is the gated
model, the straight-through gradient, the penalties against hand-computed values."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import vision_reference as ref

from jaxprune.models.vision import MLPConfig, ResNetConfig, VGGConfig, VisionModel
from jaxprune.structured import filters, gates

CONFIGS = {
    "mlp": MLPConfig(hidden=(12, 8), image_size=8),
    "vgg": VGGConfig(widths=(4, "M", 6, "M", 8), image_size=8),
    "resnet": ResNetConfig(widths=(4, 6, 8), blocks=2, image_size=8),
}


def images(n=6, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, 8, 8, 1)), jnp.float32)


@functools.cache
def trained(name):
    """A model, params and BatchNorm statistics after three training-mode batches (cached:
    building a ResNet's params takes seconds; callers must not modify them)."""
    model = VisionModel(CONFIGS[name])
    params, stats = model.init(0)
    step = jax.jit(lambda p, s, x: model.apply(p, s, x, train=True)[1])
    for seed in range(3):
        stats = step(params, stats, 2.0 * images(8, seed) + 1.0)
    return model, params, stats


def random_logits(model, seed=0):
    """Logits of both signs (about half the channels closed), none at exactly 0."""
    rng = np.random.default_rng(seed)
    return {
        g.name: jnp.asarray(rng.choice([-1.0, 1.0], g.size) * rng.uniform(0.5, 2, g.size))
        for g in model.channel_groups()
    }


def reference(model, params, stats, x, zero):
    """The plain-JAX forward with ``zero``'s channels zeroed (jitted: op by op it takes ~15 s)."""
    zero = {k: jnp.asarray(v, jnp.float32) for k, v in zero.items()}
    if isinstance(model.config, MLPConfig):
        return jax.jit(ref.mlp, static_argnums=0)(model.config, params, x, zero)
    forward = ref.vgg if isinstance(model.config, VGGConfig) else ref.resnet
    return jax.jit(forward, static_argnums=0)(model.config, params, stats, x, zero)


def test_binary_gates_are_exact_zeros_and_ones_with_the_sigmoid_gradient():
    logits = jnp.asarray([-2.0, 0.3, -0.1, 1.5])
    np.testing.assert_array_equal(gates.binary_gates(logits), [0.0, 1.0, 0.0, 1.0])
    weights = jnp.asarray([1.0, 2.0, 3.0, 4.0])
    grad = jax.grad(lambda z: jnp.sum(weights * gates.binary_gates(z)))(logits)
    s = 1 / (1 + np.exp(-np.asarray(logits)))
    np.testing.assert_allclose(grad, np.asarray(weights) * s * (1 - s), rtol=1e-6)


def test_a_group_never_closes_entirely():
    np.testing.assert_array_equal(gates.binary_gates(jnp.asarray([-3.0, -1.0, -2.0])), [0, 1, 0])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gates_at_zero_and_one_are_exactly_a_channel_mask(name):
    model, params, stats = trained(name)
    logits = random_logits(model)
    keep = gates.gate_keep(logits)
    gated = gates.gated_params(model, params, logits)
    masked = filters.masked_params(model, params, keep)
    for a, b in zip(jax.tree.leaves(gated), jax.tree.leaves(masked), strict=True):
        np.testing.assert_array_equal(a, b)
    # ...and that mask is zeroing those channels in the activations (independent forward).
    got, _ = model.apply(gated, stats, images())
    np.testing.assert_allclose(got, reference(model, params, stats, images(), keep), atol=2e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_exported_model_equals_the_gated_model(name):
    model, weights, stats = trained(name)
    gated = gates.GatedModel(model)
    params = {"weights": weights, "gates": random_logits(model, seed=1)}
    result = gates.export(gated, params, stats)
    assert result.flops < result.flops_dense
    assert result.flops == gated.flops(params)
    for group in result.model.channel_groups():
        assert group.size == int(result.keep[group.name].sum())
    want, _ = gated.apply(params, stats, images())
    got, _ = result.model.apply(result.params, result.stats, images())
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_gated_model_trains_with_the_vision_loop_and_exports():
    from jaxprune.training.loop import Split, evaluate, train

    model = VisionModel(CONFIGS["vgg"])
    gated = gates.GatedModel(model)
    params, stats = gated.init(0, logit=0.5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    split = Split(x, (x.mean(axis=(1, 2, 3)) > 0).astype(np.int32))
    tx = optax.chain(
        gates.add_penalty_gradient(lambda p: gates.gate_penalty(p["gates"], 0.5, budget=50.0)),
        gates.gate_optimizer(optax.adam(1e-2), optax.adam(0.1)),
    )
    run = train(gated, params, stats, tx, split, epochs=3, batch_size=16, progress=False)
    keep = gates.gate_keep(run.params["gates"])
    density = sum(int(k.sum()) for k in keep.values()) / sum(k.size for k in keep.values())
    assert density < 0.9  # the budget closed gates in one pass
    result = gates.export(gated, run.params, run.stats)
    small = evaluate(result.model, result.params, result.stats, split)
    assert small == evaluate(gated, run.params, run.stats, split)


def test_gate_penalty_matches_hand_computation():
    logits = {"a": jnp.asarray([0.5, 2.0]), "b": jnp.asarray([-1.0, 1.0])}
    z = np.asarray([0.5, 2.0, -1.0, 1.0])
    s = 1 / (1 + np.exp(-z))
    # Binary gates 1, 1, 0, 1: density 0.75.
    want = 3.0 * (0.75 - 0.4) ** 2 + 0.5 * np.mean(np.minimum(s, 1 - s))
    got = gates.gate_penalty(logits, 0.4, budget=3.0, polarize=0.5, per_group=False)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Per group: densities 1 and 0.5.
    want = 3.0 * ((1 - 0.4) ** 2 + (0.5 - 0.4) ** 2) / 2 + 0.5 * np.mean(np.minimum(s, 1 - s))
    np.testing.assert_allclose(gates.gate_penalty(logits, 0.4, 3.0, 0.5), want, rtol=1e-6)
    # The budget's gradient is the straight-through one: 2·b·(density − d)/n · σ'.
    penalty = lambda lg: gates.gate_penalty(lg, 0.4, budget=3.0, polarize=0.0, per_group=False)
    grad = jax.grad(penalty)(logits)
    flat = np.concatenate([grad["a"], grad["b"]])
    np.testing.assert_allclose(flat, 2 * 3.0 * 0.35 / 4 * s * (1 - s), rtol=1e-5)
    with pytest.raises(ValueError, match="density"):
        gates.gate_penalty(logits, 0.0)


def test_polarization_regulariser_matches_the_paper_formula():
    gamma = np.asarray([0.0, 0.1, 0.9, 1.0, 0.5], np.float32)
    t = 1.2
    want = np.sum(t * np.abs(gamma) - np.abs(gamma - gamma.mean()))
    np.testing.assert_allclose(gates.polarization(jnp.asarray(gamma), t), want, rtol=1e-6)
    # Fully polarized (0/1) factors score lower than the same total spread evenly: the regulariser
    # prefers polarization at equal L1 norm.
    even = gates.polarization(jnp.full((4,), 0.5), 1.0)
    polar = gates.polarization(jnp.asarray([0.0, 0.0, 1.0, 1.0]), 1.0)
    assert float(polar) < float(even)


def test_bn_polarization_sums_every_group_scale_once():
    model, params, _ = trained("vgg")
    scales = [np.asarray(params["convs"][i]["bn"]["scale"]) for i in range(3)]
    gamma = np.concatenate(scales)
    want = 0.1 * np.sum(1.5 * np.abs(gamma) - np.abs(gamma - gamma.mean()))
    np.testing.assert_allclose(gates.bn_polarization(model, params, 1.5, 0.1), want, rtol=1e-5)
    with pytest.raises(ValueError, match="no BatchNorm"):
        gates.bn_polarization(VisionModel(CONFIGS["mlp"]), trained("mlp")[1], 1.0, 1.0)


def test_bn_keep_thresholds_the_scales():
    model, params, _ = trained("vgg")
    params = jax.tree.map(lambda x: x, params)  # fresh dicts: the cached tree stays as it is
    scale = np.asarray([0.0, 0.5, 0.01, 1.0])
    params["convs"][0]["bn"]["scale"] = jnp.asarray(scale)
    keep = gates.bn_keep(model, params, 0.05)
    np.testing.assert_array_equal(keep["convs/0"], [False, True, False, True])


def test_gates_of_unknown_groups_are_refused():
    model, params, _ = trained("vgg")
    with pytest.raises(ValueError, match="unknown groups"):
        gates.gated_params(model, params, {"nope": jnp.ones(3)})
