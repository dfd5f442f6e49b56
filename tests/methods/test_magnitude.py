"""Magnitude: exact per-layer counts, exact N:M groups, ties broken by position."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from layers import layer, stats_of

from jaxprune.core.sparsity import NM, Unstructured
from jaxprune.methods import magnitude


@pytest.mark.parametrize("target", [NM(2, 4), NM(1, 4), NM(3, 8)], ids=str)
def test_nm_groups_keep_exactly_n_of_every_m_inputs(target):
    kernel, x = layer(np.random.default_rng(3), 64, 24)
    kernel[:8] = 0.0  # ties of zeros must still give exact groups
    new, keep = magnitude.solve(kernel, stats_of(x), target)
    kept = np.asarray(keep).reshape(64 // target.m, target.m, 24).sum(axis=1)
    assert np.all(kept == target.n)
    assert np.all(np.asarray(new)[~np.asarray(keep)] == 0)


def test_magnitude_nm_keeps_the_largest_of_each_group():
    kernel, _ = layer(np.random.default_rng(4), 32, 16)
    _, keep = magnitude.solve(kernel, None, NM(2, 4))
    groups = np.abs(kernel).reshape(8, 4, 16)
    kept = np.asarray(keep).reshape(8, 4, 16)
    smallest_kept = np.where(kept, groups, np.inf).min(axis=1)
    largest_pruned = np.where(kept, -np.inf, groups).max(axis=1)
    assert np.all(smallest_kept >= largest_pruned)


@pytest.mark.parametrize("shape", [(64, 48), (130, 24), (7,), (3, 3, 8, 4)])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.7, 0.99])
def test_magnitude_prunes_exactly_floor_s_size_smallest(shape, sparsity):
    kernel = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    new, keep = magnitude.solve(jnp.asarray(kernel, jnp.bfloat16), None, Unstructured(sparsity))
    keep = np.asarray(keep)
    assert new.dtype == jnp.bfloat16 and keep.shape == shape
    assert (~keep).sum() == math.floor(round(sparsity * kernel.size, 6))
    rounded = np.asarray(jnp.asarray(kernel, jnp.bfloat16), np.float32)
    if 0 < keep.sum() < keep.size:
        assert np.abs(rounded[keep]).min() >= np.abs(rounded[~keep]).max()
    np.testing.assert_array_equal(np.asarray(new, np.float32), np.where(keep, rounded, 0.0))


def test_magnitude_breaks_ties_to_exact_counts():
    new, keep = magnitude.solve(np.ones((10, 10), np.float32), None, Unstructured(0.37))
    assert (~np.asarray(keep)).sum() == 37
    np.testing.assert_array_equal(np.asarray(keep).ravel(), np.arange(100) >= 37)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda k: magnitude.solve(k[:62], None, NM(2, 4)), "multiple of 4"),
        (lambda k: magnitude.solve(k, None, "2:4"), "Unstructured"),
    ],
)
def test_bad_arguments_are_clear_errors(call, match):
    kernel, _ = layer(np.random.default_rng(7), 64, 8)
    with pytest.raises(ValueError, match=match):
        call(kernel)
