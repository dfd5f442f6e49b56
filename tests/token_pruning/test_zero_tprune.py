"""Zero-TPrune's pieces against independent NumPy computations."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.token_pruning import zero_tprune as zt


def _attention(rng, shape):
    logits = rng.standard_normal(shape) * 2
    a = np.exp(logits)
    return (a / a.sum(-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("iterations", [1, 5, 30])
def test_pagerank_equals_numpy_power_iteration(iterations):
    rng = np.random.default_rng(0)
    attn = _attention(rng, (2, 3, 9, 9))
    init = rng.random((2, 3, 9)).astype(np.float32)
    s = init.astype(np.float64)
    for _ in range(iterations):
        s = np.einsum("bhqk,bhq->bhk", attn.astype(np.float64), s)  # s <- A^T s
    out = zt.weighted_pagerank(jnp.asarray(attn), jnp.asarray(init), iterations)
    np.testing.assert_allclose(np.asarray(out), s, rtol=1e-5, atol=1e-7)


def test_pagerank_converges_to_the_stationary_distribution():
    # The fixed point of s <- A^T s is the left eigenvector of A for eigenvalue 1.
    attn = _attention(np.random.default_rng(1), (7, 7)).astype(np.float64)
    values, vectors = np.linalg.eig(attn.T)
    stationary = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    stationary /= stationary.sum()
    out = zt.weighted_pagerank(jnp.asarray(attn, jnp.float32), zt.initial_scores((7,)), 200)
    np.testing.assert_allclose(np.asarray(out), stationary, atol=1e-5)


def test_initial_scores_give_cls_sqrt_n_times_the_others():
    s = np.asarray(zt.initial_scores((16,)))
    assert s.sum() == pytest.approx(1.0)
    assert s[0] / s[1] == pytest.approx(4.0)
    assert np.allclose(zt.initial_scores((5,), uniform=True), 0.2)


def test_head_aggregation_is_rms_over_the_heads_the_variance_filter_keeps():
    rng = np.random.default_rng(2)
    scores = rng.random((1, 4, 11)).astype(np.float32)
    scores[0, 0] = 1.0  # uniform head: variance 0, filtered out
    scores[0, 1, 1:] = 1e-4
    scores[0, 1, 3] = 1.0  # one spike: huge variance, filtered out
    patches = scores[:, :, 1:]
    var = (patches / patches.mean(-1, keepdims=True)).var(-1)[0]
    kept = (var >= 0.01) & (var <= 0.7)
    assert list(kept[:2]) == [False, False] and kept.any()
    expected = np.sqrt((scores[0, kept] ** 2).mean(0))
    out = zt.aggregate_heads(jnp.asarray(scores), prefix=1)
    np.testing.assert_allclose(np.asarray(out)[0], expected, rtol=1e-6)


def test_head_aggregation_uses_all_heads_when_none_passes_the_filter():
    scores = np.ones((1, 3, 6), np.float32)  # every head uniform: all filtered out
    scores[0, :, 0] = [1.0, 2.0, 3.0]
    out = np.asarray(zt.aggregate_heads(jnp.asarray(scores), prefix=1))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0, 0], np.sqrt((1 + 4 + 9) / 3), rtol=1e-6)


def _similarity_keep_numpy(keys, scores, drop, prefix):
    k = keys[prefix:] / np.linalg.norm(keys[prefix:], axis=-1, keepdims=True)
    order = np.argsort(scores[prefix:], kind="stable")
    half = len(order) // 2
    group_a, group_b = order[:half], order[half:]
    best = (k[group_a] @ k[group_b].T).max(1)
    dropped = group_a[np.argsort(-best, kind="stable")[:drop]]
    return np.setdiff1d(np.arange(len(order)), dropped)


@pytest.mark.parametrize("drop", [1, 3, 6])
def test_similarity_stage_drops_the_less_important_tokens_with_the_closest_match(drop):
    rng = np.random.default_rng(3)
    keys = rng.standard_normal((2, 14, 8)).astype(np.float32)
    scores = rng.random((2, 14)).astype(np.float32)
    out = np.asarray(zt.similarity_keep(jnp.asarray(keys), jnp.asarray(scores), drop, prefix=1))
    for b in range(2):
        np.testing.assert_array_equal(out[b], _similarity_keep_numpy(keys[b], scores[b], drop, 1))


def test_similarity_stage_removes_a_duplicate_of_a_more_important_token():
    rng = np.random.default_rng(4)
    keys = rng.standard_normal((1, 9, 16)).astype(np.float32)
    keys[0, 5] = keys[0, 2] * 3.0  # same direction as token 2
    scores = np.linspace(1.0, 0.1, 9, dtype=np.float32)[None]  # token 5 less important than 2
    kept = np.asarray(zt.similarity_keep(jnp.asarray(keys), jnp.asarray(scores), 1, prefix=1))
    assert 5 - 1 not in kept[0] and len(kept[0]) == 7


def test_importance_stage_keeps_the_tokens_that_receive_the_attention():
    n, prefix = 10, 1
    attn = np.full((1, 2, n, n), 0.01, np.float32)
    attn[..., 3] = attn[..., 7] = 1.0  # every query attends to tokens 3 and 7
    attn /= attn.sum(-1, keepdims=True)
    x = np.arange(n, dtype=np.float32)[None, :, None] * np.ones((1, n, 4), np.float32)
    taps = {"attn": jnp.asarray(attn), "keys": jnp.asarray(np.random.rand(1, n, 4))}
    out, _ = zt.reduce(
        jnp.asarray(x), taps, 2, prefix=prefix, layer=5, num_layers=12, similarity_share=0.0
    )
    assert np.asarray(out)[0, :, 0].tolist() == [0.0, 3.0, 7.0]


def test_default_iterations_follow_the_paper_by_depth():
    assert [zt.default_iterations(i, 12) for i in (0, 2, 3, 8, 9, 11)] == [30, 30, 5, 5, 1, 1]
