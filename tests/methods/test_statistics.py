"""Input statistics against NumPy: squared norms, token counts and the SparseGPT Hessian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.methods import statistics


def numpy_stats(x):
    x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    return 2.0 / len(x) * x.T @ x, np.sum(x**2, axis=0), len(x)


def test_empty_stats_have_the_layer_shapes():
    stats = statistics.init_stats(12, with_hessian=True)
    assert stats.hessian.shape == (12, 12) and stats.hessian.dtype == jnp.float32
    assert stats.sq_norms.shape == (12,) and stats.sq_norms.dtype == jnp.float32
    assert int(stats.count) == 0
    assert statistics.init_stats(12, with_hessian=False).hessian is None


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_one_batch_matches_numpy(dtype):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 7, 24)), dtype)
    stats = statistics.accumulate(statistics.init_stats(24, True), x)
    h, sq, n = numpy_stats(np.asarray(x.astype(jnp.float32)))
    assert int(stats.count) == n == 21
    np.testing.assert_allclose(statistics.hessian(stats), h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.sq_norms, sq, rtol=1e-5)


def test_batches_accumulate_to_the_statistics_of_their_concatenation():
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(size, 16)).astype(np.float32) * 3 for size in (5, 40, 1, 17)]
    step = jax.jit(statistics.accumulate)
    stats = statistics.init_stats(16, True)
    for batch in batches:
        stats = step(stats, batch)
    whole = statistics.accumulate(statistics.init_stats(16, True), np.concatenate(batches))
    h, sq, n = numpy_stats(np.concatenate(batches))
    assert int(stats.count) == int(whole.count) == n
    # Entries are ~18 on the diagonal; float32 cancellation in small off-diagonal sums needs atol.
    tol = {"rtol": 1e-5, "atol": 1e-5 * np.abs(h).max()}
    np.testing.assert_allclose(statistics.hessian(stats), statistics.hessian(whole), **tol)
    np.testing.assert_allclose(statistics.hessian(stats), h, **tol)
    np.testing.assert_allclose(stats.sq_norms, sq, rtol=1e-5)


def test_norms_only_stats_skip_the_hessian():
    x = np.random.default_rng(2).normal(size=(9, 5)).astype(np.float32)
    stats = statistics.accumulate(statistics.init_stats(5, with_hessian=False), x)
    assert stats.hessian is None
    np.testing.assert_allclose(stats.sq_norms, numpy_stats(x)[1], rtol=1e-6)
    with pytest.raises(ValueError, match="with_hessian=True"):
        statistics.hessian(stats)


def test_empty_batch_changes_nothing_and_stays_finite():
    stats = statistics.accumulate(statistics.init_stats(4, True), np.zeros((0, 4), np.float32))
    assert int(stats.count) == 0
    np.testing.assert_array_equal(statistics.hessian(stats), np.zeros((4, 4)))


def test_inputs_of_the_wrong_width_are_a_clear_error():
    with pytest.raises(ValueError, match="8 inputs"):
        statistics.accumulate(statistics.init_stats(8, True), np.ones((3, 7), np.float32))


def test_moments_give_each_features_mean_and_variance():
    x = np.random.default_rng(3).normal(2.0, 3.0, size=(5, 40, 6)).astype(np.float32)
    state = statistics.MOMENTS.init(6)
    for batch in x:
        state = jax.jit(statistics.MOMENTS.update)(state, jnp.asarray(batch))
    flat = x.reshape(-1, 6).astype(np.float64)
    assert int(state.count) == 200
    np.testing.assert_allclose(state.mean, flat.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(state.variance, flat.var(axis=0), rtol=1e-4)


def test_combined_statistics_update_every_part_like_each_alone():
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 9, 8)), jnp.float32)
    both = statistics.combine(statistics.HESSIAN, statistics.MOMENTS)
    state = both.update(both.init(8), x)
    alone = statistics.HESSIAN.update(statistics.HESSIAN.init(8), x)
    moments = statistics.MOMENTS.update(statistics.MOMENTS.init(8), x)
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves((alone, moments)), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="at least one"):
        statistics.combine()


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_gram_equals_the_float32_product_of_its_inputs(dtype):
    # bf16/f16 inputs are multiplied as they are (tensor cores) with float32 accumulation; the
    # products are exact, so the result is the float32 product of the upcast inputs up to the
    # order of accumulation.
    x = jnp.asarray(np.random.default_rng(5).normal(size=(4096, 48)) * 3.0, dtype)
    fast = statistics.gram(x)
    exact = statistics.gram(x.astype(jnp.float32))
    assert fast.dtype == jnp.float32
    np.testing.assert_allclose(fast, exact, rtol=1e-5, atol=1e-3)
    reference = np.asarray(x, np.float64).T @ np.asarray(x, np.float64)
    np.testing.assert_allclose(fast, reference, rtol=2e-5, atol=2e-3)  # float32 accumulation


@pytest.mark.parametrize("tokens", [1, 255, 256, 600])
def test_fixed_order_token_sums_equal_the_whole_sums(tokens, monkeypatch):
    # 600 tokens: two chunks of 256 and a third padded with zero tokens.
    monkeypatch.setenv(statistics.FIXED_ORDER, "1")
    x = np.random.default_rng(tokens).normal(size=(tokens, 24)).astype(np.float32)
    ref = x.astype(np.float64)
    np.testing.assert_allclose(statistics.gram(x), ref.T @ ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(statistics.column_sum(x), ref.sum(0), rtol=1e-5, atol=1e-4)
