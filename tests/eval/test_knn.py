"""Weighted k-NN against a direct NumPy loop."""

import numpy as np
import pytest

from jaxprune.eval.knn import knn_accuracy, knn_predict


def _loop(train, labels, test, k, t):
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    out = []
    for q in test / np.linalg.norm(test, axis=1, keepdims=True):
        sim = train @ q
        top = np.argsort(-sim)[:k]
        votes = np.zeros(labels.max() + 1)
        for i in top:
            votes[labels[i]] += np.exp(sim[i] / t)
        out.append(votes.argmax())
    return np.array(out)


def test_knn_matches_a_direct_loop():
    rng = np.random.default_rng(0)
    train, test = rng.standard_normal((200, 6)), rng.standard_normal((50, 6))
    labels = rng.integers(0, 4, 200)
    np.testing.assert_array_equal(
        knn_predict(train, labels, test, k=7, temperature=0.1, batch_size=16),
        _loop(train, labels, test, 7, 0.1),
    )


def test_knn_recovers_separated_clusters():
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((3, 8)) * 5
    labels = np.repeat(np.arange(3), 30)
    train = centers[labels] + rng.standard_normal((90, 8)) * 0.1
    test = centers[labels[::3]] + rng.standard_normal((30, 8)) * 0.1
    assert knn_accuracy(train, labels, test, labels[::3], k=20) == 1.0


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="k must be"):
        knn_predict(np.ones((3, 2)), np.zeros(3, int), np.ones((1, 2)), k=5)
    with pytest.raises(ValueError, match="NaN"):
        knn_predict(np.full((3, 2), np.nan), np.zeros(3, int), np.ones((1, 2)), k=1)
