"""Beta-Rank and HRank against NumPy loops over positions and images; Chan's merge."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune.models.vision import MLPConfig, VGGConfig, VisionModel
from jaxprune.structured.beta_rank import beta_rank_scores, hrank_scores, merge_moments


def calibration_images(n=7, size=6, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, size, size, 1)).astype(np.float32)
    x[:, :3, :3] = 0.0  # a dead corner: receptive fields there never vary
    return x


def numpy_beta(x, kernel, ratio):
    """The definition, one position and one filter at a time (3×3, stride 1, SAME padding)."""
    n, h, w, _ = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    k = kernel.astype(np.float64)
    scores = []
    for f in range(k.shape[-1]):
        ratios = []
        for i in range(h):
            for j in range(w):
                field = padded[:, i : i + 3, j : j + 3, :]
                out = np.einsum("nabc,abc->n", field, k[..., f])
                s_in, s_out = np.std(field), np.std(out)
                if s_in > 0 and s_out > 0:
                    ratios.append(s_in / s_out if ratio == "paper" else s_out / s_in)
                else:
                    ratios.append(0.0)
        scores.append(np.mean(np.abs(k[..., f])) * np.mean(ratios))
    return np.asarray(scores)


@pytest.mark.parametrize("ratio", ["paper", "reference"])
def test_beta_rank_equals_the_definition_computed_position_by_position(ratio):
    model = VisionModel(VGGConfig(widths=(5,), image_size=6))
    params, stats = model.init(3)
    x = calibration_images()
    got = beta_rank_scores(model, params, stats, x, ratio=ratio, batch_size=3)  # 3 batches
    want = numpy_beta(x, np.asarray(params["convs"][0]["conv"]["kernel"]), ratio)
    np.testing.assert_allclose(got["convs/0"], want, rtol=2e-4)


def test_beta_rank_of_a_linear_uses_the_whole_input_as_the_field():
    model = VisionModel(MLPConfig(hidden=(6,), image_size=4))
    params, stats = model.init(0)
    x = np.random.default_rng(1).normal(size=(9, 4, 4, 1)).astype(np.float32)
    flat = x.reshape(9, -1).astype(np.float64)
    kernel = np.asarray(params["layers"][0]["kernel"], np.float64)
    out = flat @ kernel + np.asarray(params["layers"][0]["bias"])
    want = np.abs(kernel).mean(0) * np.std(flat) / out.std(0)
    got = beta_rank_scores(model, params, stats, x, batch_size=4)
    np.testing.assert_allclose(got["layers/0"], want, rtol=2e-4)


def test_a_dead_filter_scores_zero_and_goes_first():
    model = VisionModel(VGGConfig(widths=(4,), image_size=6))
    params, stats = model.init(0)
    kernel = params["convs"][0]["conv"]["kernel"]
    params["convs"][0]["conv"]["kernel"] = kernel.at[..., 2].set(0.0)
    scores = beta_rank_scores(model, params, stats, calibration_images())["convs/0"]
    assert scores[2] == 0.0 and np.all(np.delete(scores, 2) > 0)


def test_hrank_is_the_mean_rank_of_each_channels_feature_maps():
    model = VisionModel(VGGConfig(widths=(4, "M", 3), image_size=8))
    params, stats = model.init(1)
    x = np.random.default_rng(2).normal(size=(5, 8, 8, 1)).astype(np.float32)
    got = hrank_scores(model, params, stats, x, batch_size=2)
    _, taps = model.capture(params, stats, jnp.asarray(x))
    for name in ("convs/0", "convs/1"):
        maps = np.asarray(taps[f"{name}:act"], np.float64)
        want = [
            np.mean([np.linalg.matrix_rank(maps[n, :, :, c]) for n in range(5)])
            for c in range(maps.shape[-1])
        ]
        np.testing.assert_allclose(got[name], want)


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5), seed=st.integers(0, 999))
def test_merged_moments_equal_the_moments_of_all_data(sizes, seed):
    data = np.random.default_rng(seed).normal(3.0, 2.0, size=sum(sizes)).astype(np.float32)
    total, start = None, 0
    for size in sizes:
        chunk = data[start : start + size]
        start += size
        part = (np.float32(size), chunk.mean(), np.sum((chunk - chunk.mean()) ** 2))
        total = part if total is None else merge_moments(total, part)
    n, mean, m2 = total
    assert n == data.size
    np.testing.assert_allclose(mean, data.mean(), rtol=1e-5)
    np.testing.assert_allclose(m2 / n, data.var(), rtol=1e-4)


def test_bad_requests_are_named():
    model = VisionModel(VGGConfig(widths=(4,), image_size=6))
    params, stats = model.init(0)
    with pytest.raises(ValueError, match="ratio"):
        beta_rank_scores(model, params, stats, calibration_images(), ratio="inverse")
    with pytest.raises(ValueError, match="matches none"):
        hrank_scores(model, params, stats, calibration_images(), include="stage.*")
    with pytest.raises(ValueError, match="at least one image"):
        beta_rank_scores(model, params, stats, calibration_images()[:0])


def numpy_reference_slicing(x, kernel):
    """The reference's ``std_filters`` transcribed on NCHW arrays: output position ``(i, j)``
    compares ``std(out[:, k, i, j])`` with ``std(inp[:, i:i+3, j:j+3, :])`` (channels i.., rows
    j.., every column; unpadded input), summed over positions with a finite input std."""
    n, h, w, c = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    k = kernel.astype(np.float64)
    out = np.stack(
        [
            np.einsum("nabc,abcf->nf", padded[:, i : i + 3, j : j + 3], k)
            for i in range(h)
            for j in range(w)
        ],
        2,
    ).reshape(n, k.shape[-1], h, w)  # NCHW
    inp = x.astype(np.float64).transpose(0, 3, 1, 2)  # NCHW
    scores = []
    for f in range(k.shape[-1]):
        total = 0.0
        for i in range(h):
            for j in range(w):
                piece = inp[:, i : i + 3, j : j + 3, :]
                if piece.size == 0:
                    continue  # the reference's NaN
                total += np.std(out[:, f, i, j]) / np.std(piece)
        scores.append(np.mean(np.abs(k[..., f])) * total)
    return np.asarray(scores)


def test_reference_slicing_equals_the_reference_loop_on_nchw_arrays():
    model = VisionModel(VGGConfig(widths=(5,), image_size=6, in_channels=3))
    params, stats = model.init(2)
    x = np.random.default_rng(4).normal(size=(9, 6, 6, 3)).astype(np.float32)
    got = beta_rank_scores(
        model, params, stats, x, ratio="reference", slicing="reference", batch_size=9
    )
    want = numpy_reference_slicing(x, np.asarray(params["convs"][0]["conv"]["kernel"]))
    # Ours is the mean over the 36 positions, the reference's the sum: one constant per layer.
    np.testing.assert_allclose(got["convs/0"] * 36, want, rtol=2e-4)
    # It differs from the receptive-field definition (channels 1.. and rows, not a 3x3 field).
    field = beta_rank_scores(model, params, stats, x, ratio="reference", batch_size=9)
    assert not np.allclose(field["convs/0"], got["convs/0"], rtol=1e-2)
    # One calibration batch: images past the first batch are not read.
    more = np.concatenate([x, 100 * x])
    again = beta_rank_scores(
        model, params, stats, more, ratio="reference", slicing="reference", batch_size=9
    )
    np.testing.assert_array_equal(again["convs/0"], got["convs/0"])


def test_reference_slicing_refuses_linear_layers():
    model = VisionModel(MLPConfig(hidden=(6,), image_size=4))
    params, stats = model.init(0)
    with pytest.raises(ValueError, match="convolutions"):
        beta_rank_scores(model, params, stats, np.ones((2, 4, 4, 1)), slicing="reference")
