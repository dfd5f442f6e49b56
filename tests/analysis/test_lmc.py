"""Linear mode connectivity: a model with itself has no barrier, BatchNorm statistics are the
exact statistics of the images at every point, barriers against hand-computed values."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.analysis import barrier, interpolate, recompute_batch_stats
from jaxprune.analysis.lmc import LmcResult
from jaxprune.models.vision import ResNetConfig, VGGConfig, VisionModel

VGG = VGGConfig(widths=(4, "M", 6), image_size=8)


def data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = (1.5 * rng.normal(size=(n, 8, 8, 1)) + 0.5).astype(np.float32)
    return x, rng.integers(0, 10, n).astype(np.int32)


def test_the_barrier_of_a_model_with_itself_is_zero():
    model = VisionModel(VGG)
    params, stats = model.init(0)
    x, y = data()
    result = barrier(model, (params, stats), (params, stats), x, y, points=11, batch_size=20)
    assert len(result.alphas) == 11
    assert result.barrier == 0.0 and result.error_barrier == 0.0
    assert np.all(result.losses == result.losses[0])


@dataclasses.dataclass(frozen=True)
class TwoLayer:
    """``relu(x W1) W2`` without BatchNorm: a model whose loss path NumPy can compute."""

    def apply(self, params, stats, images, train=False):
        hidden = jax.nn.relu(images.reshape(len(images), -1) @ params["w1"])
        return hidden @ params["w2"], stats


def _numpy_path_losses(a, b, x, y, alphas):
    losses = []
    for alpha in alphas:
        w1 = a["w1"] + alpha * (b["w1"] - a["w1"])
        w2 = a["w2"] + alpha * (b["w2"] - a["w2"])
        logits = np.maximum(x @ w1, 0.0) @ w2
        logits = logits - logits.max(1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        losses.append(-log_p[np.arange(len(y)), y].mean())
    return np.asarray(losses)


def test_two_permuted_copies_of_one_network_have_the_known_barrier():
    # Model b is model a with its hidden units swapped: the same function (equal endpoint
    # losses), but halfway the first layer cancels to 0, the logits are 0 and the loss is ln C.
    x = np.eye(3, dtype=np.float64).repeat(4, 0)  # 12 one-hot inputs, label = the hot index
    y = np.arange(3).repeat(4).astype(np.int32)
    w1 = np.concatenate([np.eye(3), -np.eye(3)], 1)  # hidden = [relu(x), relu(-x)]
    w2 = np.concatenate([4.0 * np.eye(3), -np.eye(3)], 0)
    a = {"w1": w1, "w2": w2}
    b = {"w1": np.concatenate([-np.eye(3), np.eye(3)], 1), "w2": w2[[3, 4, 5, 0, 1, 2]]}
    as_jax = lambda p: {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
    result = barrier(TwoLayer(), (as_jax(a), {}), (as_jax(b), {}), x.astype(np.float32), y)
    want = _numpy_path_losses(a, b, x, y, result.alphas)
    np.testing.assert_allclose(result.losses, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.losses[5], np.log(3), rtol=1e-6)  # alpha = 0.5
    end = want[0]
    assert want[-1] == pytest.approx(end)
    assert result.barrier == pytest.approx(np.max(want - end), rel=1e-5)
    assert result.barrier >= np.log(3) - end - 1e-6 and result.barrier > 0.9
    assert result.error_barrier == pytest.approx(2 / 3)  # halfway: argmax of equal logits


@pytest.mark.parametrize("config", [VGG, ResNetConfig(widths=(4, 6), blocks=1, image_size=8)])
def test_recomputed_statistics_in_one_batch_are_those_of_all_the_images(config):
    model = VisionModel(config)
    params, stats = model.init(0)
    x, _ = data(n=60)
    got = recompute_batch_stats(model, params, stats, x, batch_size=60)
    whole = _whole_batch_stats(model, params, stats, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(whole), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_batches_pool_exactly_into_the_first_layers_statistics():
    model = VisionModel(VGG)
    params, stats = model.init(0)
    x, _ = data(n=60)
    got = recompute_batch_stats(model, params, stats, x, batch_size=20)
    # The first BatchNorm sees the convolution of the raw images: NumPy reference over all 60.
    kernel = np.asarray(params["convs"][0]["conv"]["kernel"], np.float64)
    out = np.asarray(
        jax.lax.conv_general_dilated(
            jnp.asarray(x, jnp.float32),
            jnp.asarray(kernel, jnp.float32),
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision="highest",
        ),
        np.float64,
    ).reshape(-1, kernel.shape[-1])
    np.testing.assert_allclose(got["convs"][0]["bn"]["mean"], out.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["convs"][0]["bn"]["var"], out.var(0), rtol=1e-4, atol=1e-5)
    # Deeper layers see per-batch normalised inputs, so they differ from one whole batch.
    whole = recompute_batch_stats(model, params, stats, x, batch_size=60)
    assert not np.allclose(
        got["convs"][1]["bn"]["mean"], whole["convs"][1]["bn"]["mean"], atol=1e-6
    )


def _whole_batch_stats(model, params, stats, x):
    """One training-mode pass over all images, the running update undone with its momentum
    (read from the NNX module, unlike the code under test)."""
    from flax import nnx

    module = model.module(params, stats)
    momenta = {m.momentum for _, m in nnx.iter_graph(module) if isinstance(m, nnx.BatchNorm)}
    (m,) = momenta
    zeros = jax.tree.map(jnp.zeros_like, stats)
    _, new = model.apply(params, zeros, jnp.asarray(x), train=True)
    return jax.tree.map(lambda s: s / (1 - m), new)


def test_interpolation_is_exact_at_the_ends_and_linear_between():
    a, b = {"w": jnp.asarray([1.0, 2.0])}, {"w": jnp.asarray([3.0, -2.0])}
    assert interpolate(a, b, 0.0) is a and interpolate(a, b, 1.0) is b
    np.testing.assert_allclose(interpolate(a, b, 0.25)["w"], [1.5, 1.0])
    with pytest.raises(ValueError, match="shapes"):
        interpolate(a, {"w": jnp.ones(3)}, 0.5)


def test_barrier_is_the_largest_rise_above_the_endpoint_line():
    alphas = np.linspace(0, 1, 5)
    result = LmcResult(alphas, np.asarray([1.0, 2.5, 1.5, 2.0, 2.0]), np.zeros(5))
    # Line: 1.0, 1.25, 1.5, 1.75, 2.0 -> rises 0, 1.25, 0, 0.25, 0.
    assert result.barrier == pytest.approx(1.25)
    assert result.error_barrier == 0.0


def test_fewer_than_eleven_points_are_refused():
    model = VisionModel(VGG)
    x, y = data()
    with pytest.raises(ValueError, match="11 points"):
        barrier(model, model.init(0), model.init(1), x, y, points=5)
