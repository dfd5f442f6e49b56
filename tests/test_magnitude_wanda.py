"""Magnitude and Wanda masks: exact counts, exact N:M groups, Wanda equal to a NumPy reference."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune.methods import magnitude, statistics, wanda
from jaxprune.methods.base import num_pruned, smallest_mask
from jaxprune.sparsity import NM, Unstructured


def stats_of(x):
    return statistics.accumulate(statistics.init_stats(x.shape[-1], False), jnp.asarray(x))


def wanda_reference(kernel, x, target):
    """The reference ``prune_wanda`` in NumPy on the torch layout ``(out, in)``: True = kept."""
    w = np.asarray(kernel, np.float64).T
    metric = np.abs(w) * np.sqrt(np.sum(np.asarray(x, np.float64) ** 2, axis=0))[None, :]
    pruned = np.zeros(w.shape, bool)
    if isinstance(target, NM):
        for start in range(0, w.shape[1], target.m):
            group = metric[:, start : start + target.m]
            order = np.argsort(group, axis=1, kind="stable")[:, : target.m - target.n]
            np.put_along_axis(pruned[:, start : start + target.m], order, True, axis=1)
    else:
        k = math.floor(round(w.shape[1] * target.sparsity, 6))
        order = np.argsort(metric, axis=1, kind="stable")[:, :k]
        np.put_along_axis(pruned, order, True, axis=1)
    return ~pruned.T


def layer(rng, d_in, d_out, tokens=32):
    kernel = rng.normal(size=(d_in, d_out)).astype(np.float32)
    # Feature scales spread over two decades, so Wanda's ranking differs from magnitude's.
    x = rng.normal(size=(tokens, d_in)) * rng.lognormal(0.0, 1.5, size=d_in)
    return kernel, x.astype(np.float32)


@pytest.mark.parametrize("shape", [(64, 48), (96, 40), (130, 24)])
@pytest.mark.parametrize("target", [Unstructured(0.5), Unstructured(0.7), NM(2, 4)], ids=str)
def test_wanda_matches_numpy_reference(shape, target):
    if isinstance(target, NM) and shape[0] % target.m:
        pytest.skip("N:M needs in % m == 0")
    kernel, x = layer(np.random.default_rng(shape[0]), *shape)
    new, keep = wanda.prune(kernel, stats_of(x), target)
    np.testing.assert_array_equal(np.asarray(keep), wanda_reference(kernel, x, target))
    np.testing.assert_array_equal(np.asarray(new), np.where(keep, kernel, 0.0))
    magnitude_keep = magnitude.prune(kernel, None, target)[1]
    assert not np.array_equal(np.asarray(keep), np.asarray(magnitude_keep))


@settings(max_examples=15, deadline=None)
@given(
    d_in=st.integers(1, 40),
    d_out=st.integers(1, 12),
    sparsity=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**16),
)
def test_wanda_prunes_exactly_floor_s_in_per_output_column(d_in, d_out, sparsity, seed):
    kernel, x = layer(np.random.default_rng(seed), d_in, d_out, tokens=4)
    new, keep = wanda.prune(kernel, stats_of(x), Unstructured(sparsity))
    zeros_per_column = d_in - np.asarray(keep).sum(axis=0)
    assert np.all(zeros_per_column == num_pruned(sparsity, d_in))
    assert np.all(np.asarray(new)[~np.asarray(keep)] == 0)


@pytest.mark.parametrize("target", [NM(2, 4), NM(1, 4), NM(3, 8)], ids=str)
@pytest.mark.parametrize("module", [magnitude, wanda], ids=["magnitude", "wanda"])
def test_nm_groups_keep_exactly_n_of_every_m_inputs(module, target):
    kernel, x = layer(np.random.default_rng(3), 64, 24)
    kernel[:8] = 0.0  # ties of zeros must still give exact groups
    new, keep = module.prune(kernel, stats_of(x), target)
    kept = np.asarray(keep).reshape(64 // target.m, target.m, 24).sum(axis=1)
    assert np.all(kept == target.n)
    assert np.all(np.asarray(new)[~np.asarray(keep)] == 0)


def test_magnitude_nm_keeps_the_largest_of_each_group():
    kernel, _ = layer(np.random.default_rng(4), 32, 16)
    _, keep = magnitude.prune(kernel, None, NM(2, 4))
    groups = np.abs(kernel).reshape(8, 4, 16)
    kept = np.asarray(keep).reshape(8, 4, 16)
    smallest_kept = np.where(kept, groups, np.inf).min(axis=1)
    largest_pruned = np.where(kept, -np.inf, groups).max(axis=1)
    assert np.all(smallest_kept >= largest_pruned)


@pytest.mark.parametrize("shape", [(64, 48), (130, 24), (7,), (3, 3, 8, 4)])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.7, 0.99])
def test_magnitude_prunes_exactly_floor_s_size_smallest(shape, sparsity):
    kernel = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    new, keep = magnitude.prune(jnp.asarray(kernel, jnp.bfloat16), None, Unstructured(sparsity))
    keep = np.asarray(keep)
    assert new.dtype == jnp.bfloat16 and keep.shape == shape
    assert (~keep).sum() == math.floor(round(sparsity * kernel.size, 6))
    rounded = np.asarray(jnp.asarray(kernel, jnp.bfloat16), np.float32)
    if 0 < keep.sum() < keep.size:
        assert np.abs(rounded[keep]).min() >= np.abs(rounded[~keep]).max()
    np.testing.assert_array_equal(np.asarray(new, np.float32), np.where(keep, rounded, 0.0))


def test_magnitude_breaks_ties_to_exact_counts():
    new, keep = magnitude.prune(np.ones((10, 10), np.float32), None, Unstructured(0.37))
    assert (~np.asarray(keep)).sum() == 37
    np.testing.assert_array_equal(np.asarray(keep).ravel(), np.arange(100) >= 37)


@pytest.mark.parametrize("axis", [0, 1, None])
def test_smallest_mask_equals_stable_argsort_prefix(axis):
    rng = np.random.default_rng(6)
    # Many ties, both signs, magnitudes from 1e-30 to 1e30, and infinities.
    scores = rng.integers(-3, 4, size=(30, 7)) * 10.0 ** rng.integers(-30, 31, size=(30, 7))
    scores[0, :3] = [np.inf, -np.inf, np.inf]
    scores = scores.astype(np.float32)
    size = scores.size if axis is None else scores.shape[axis]
    for k in (0, 1, size // 3, size - 1, size):
        flat = scores.reshape(-1, 1) if axis is None else scores
        along = 0 if axis is None else axis
        expected = np.zeros(flat.shape, bool)
        order = np.take(np.argsort(flat, axis=along, kind="stable"), np.arange(k), axis=along)
        np.put_along_axis(expected, order, True, axis=along)
        got = smallest_mask(jnp.asarray(scores), k, axis=axis)
        np.testing.assert_array_equal(got, expected.reshape(scores.shape))


def test_num_pruned_is_the_floor_without_float_artefacts():
    assert 0.57 * 100 < 57 and num_pruned(0.57, 100) == 57
    assert num_pruned(0.5, 7) == 3 and num_pruned(0.0, 10) == 0 and num_pruned(0.99, 10) == 9


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda k, s: wanda.prune(k, None, Unstructured(0.5)), "squared input norms"),
        (lambda k, s: wanda.prune(k, stats_of(np.ones((2, 5))), Unstructured(0.5)), r"\(64,\)"),
        (lambda k, s: wanda.prune(k[:, 0], s, Unstructured(0.5)), "2-D"),
        (lambda k, s: wanda.prune(k[:62], stats_of(np.ones((2, 62))), NM(2, 4)), "multiple of 4"),
        (lambda k, s: magnitude.prune(k[:62], None, NM(2, 4)), "multiple of 4"),
        (lambda k, s: magnitude.prune(k, None, "2:4"), "Unstructured"),
    ],
)
def test_bad_arguments_are_clear_errors(call, match):
    kernel, x = layer(np.random.default_rng(7), 64, 8)
    with pytest.raises(ValueError, match=match):
        call(kernel, stats_of(x))
