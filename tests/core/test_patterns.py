"""keep_mask: exact counts for unstructured, N:M along the input axis, whole output channels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune.core.patterns import check_pattern, keep_mask, prune_count, pruned_fraction
from jaxprune.core.sparsity import NM, Channel, Unstructured


def reference_prune(scores: np.ndarray, k: int) -> np.ndarray:
    """True at the first k of a stable argsort (the smallest scores, ties by position)."""
    flat = np.zeros(scores.size, bool)
    flat[np.argsort(scores.reshape(-1), kind="stable")[:k]] = True
    return flat.reshape(scores.shape)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.sampled_from([(7,), (6, 5), (3, 3, 4, 8)]),
    sparsity=st.floats(0.0, 0.99),
    scale=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_unstructured_prunes_the_float32_count_of_lowest_scores(shape, sparsity, scale, seed):
    scores = np.random.default_rng(seed).integers(0, 5, size=shape).astype(np.float32)  # ties
    n = int(np.prod(shape))
    k = int(np.floor(np.float32(np.float32(sparsity) * np.float32(scale)) * np.float32(n)))
    keep = jax.jit(keep_mask, static_argnums=1)(scores, Unstructured(sparsity), scale)
    np.testing.assert_array_equal(~np.asarray(keep), reference_prune(scores, k))
    assert int(prune_count(Unstructured(sparsity), shape, scale)) == k


def test_nm_keeps_n_of_every_m_inputs_of_a_conv_kernel():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 8, 5)).astype(np.float32)
    keep = np.asarray(keep_mask(np.abs(kernel), NM(2, 4)))
    groups = keep.reshape(3, 3, 2, 4, 5)
    assert np.all(groups.sum(axis=3) == 2)
    # The kept two are the two largest |w| of their group.
    order = np.argsort(-np.abs(kernel).reshape(3, 3, 2, 4, 5), axis=3, kind="stable")
    expected = np.zeros_like(groups)
    np.put_along_axis(expected, order[:, :, :, :2], True, axis=3)
    np.testing.assert_array_equal(groups, expected)


def test_nm_at_scale_zero_keeps_everything():
    keep = keep_mask(jnp.ones((8, 3)), NM(2, 4), scale=0.0)
    assert bool(jnp.all(keep))


def test_channel_removes_whole_output_channels_with_the_smallest_sums():
    rng = np.random.default_rng(1)
    scores = rng.random((3, 3, 4, 10)).astype(np.float32)
    keep = np.asarray(keep_mask(scores, Channel(0.3)))
    per_channel = keep.reshape(-1, 10)
    assert np.all(per_channel.all(0) | ~per_channel.any(0))  # whole channels only
    removed = ~per_channel.all(0)
    np.testing.assert_array_equal(removed, reference_prune(scores.reshape(-1, 10).sum(0), 3))
    assert pruned_fraction(Channel(0.3), scores.shape) == pytest.approx(0.3)


def test_count_override_and_traced_scale_share_one_program():
    scores = jnp.arange(20.0).reshape(4, 5)
    f = jax.jit(lambda s, c: keep_mask(scores, Unstructured(0.5), s, count=c))
    assert int(jnp.sum(~f(1.0, 3))) == 3 and int(jnp.sum(~f(0.2, 7))) == 7


@pytest.mark.parametrize(
    "pattern, shape, message",
    [
        (NM(2, 4), (6,), "needs a kernel"),
        (Channel(0.5), (6,), "needs a kernel"),
        (NM(2, 4), (6, 3), "multiple of 4"),
        ("0.5", (4, 4), "unknown sparsity pattern"),
    ],
)
def test_patterns_that_cannot_apply_are_named(pattern, shape, message):
    with pytest.raises(ValueError, match=message):
        check_pattern(pattern, shape, "w")


def test_channel_sparsity_is_validated():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Channel(1.0)
