"""Exact-count selection: the k smallest, ties broken like a stable argsort, no float artefacts."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.core.select import num_pruned, smallest_mask


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


def test_counts_stay_exact_when_the_scores_are_computed_inside_the_same_program():
    # Regression: XLA fused this score expression (RIA's guarded divisions, a traced power) into
    # each counting pass and rounded it differently in one of them, so some 2:4 groups kept 3.
    import jax

    from jaxprune.core.select import nm_prune_mask

    rng = np.random.default_rng(64)
    kernel = rng.normal(size=(64, 48)).astype(np.float32)
    x = (rng.normal(size=(32, 64)) * rng.lognormal(0.0, 1.5, size=64)).astype(np.float32)

    def relative(w, total):
        return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 0.0)

    @jax.jit
    def prune_two_of_four(kernel, sq, alpha):
        w = jnp.abs(kernel)
        rel = relative(w, w.sum(0, keepdims=True)) + relative(w, w.sum(1, keepdims=True))
        keep = ~nm_prune_mask(rel * (jnp.sqrt(sq) ** alpha)[:, None], 2, 4)
        return jnp.where(keep, kernel, 0.0), keep

    _, keep = prune_two_of_four(kernel, jnp.sum(x * x, axis=0), jnp.float32(0.5))
    assert np.all(np.asarray(keep).reshape(16, 4, 48).sum(axis=1) == 2)
