"""k-nearest-neighbour classification of features, the standard probe of self-supervised ViTs.

As in DINO's evaluation: features are L2-normalised, the ``k`` training features with the highest
cosine similarity vote for their labels with weights ``exp(similarity / temperature)``, and the
class with the largest total wins.
"""

from __future__ import annotations

import numpy as np


def knn_predict(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 1024,
) -> np.ndarray:
    """Predicted labels ``(n_test,)`` of ``test_features`` by weighted k-NN vote.

    Args:
      train_features: ``(n_train, d)``.
      train_labels: ``(n_train,)`` non-negative integer labels.
      test_features: ``(n_test, d)``.
      k: neighbours per test point (at most ``n_train``).
      temperature: vote weight ``exp(cos / temperature)``.
      batch_size: test points per similarity block (bounds memory).

    Raises:
      ValueError: mismatched shapes, ``k`` out of range, or non-finite features.
    """
    train = np.asarray(train_features, np.float32)
    test = np.asarray(test_features, np.float32)
    labels = np.asarray(train_labels)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise ValueError(f"features must be (n, d) with equal d: {train.shape}, {test.shape}")
    if labels.shape != (train.shape[0],):
        raise ValueError(f"train_labels {labels.shape} do not match train_features {train.shape}")
    if not 1 <= k <= train.shape[0]:
        raise ValueError(f"k must be in [1, {train.shape[0]}], got {k}")
    if not (np.isfinite(train).all() and np.isfinite(test).all()):
        raise ValueError("features contain NaN or inf")
    train = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-12)
    test = test / np.maximum(np.linalg.norm(test, axis=1, keepdims=True), 1e-12)
    num_classes = int(labels.max()) + 1
    out = np.empty(test.shape[0], np.int64)
    for start in range(0, test.shape[0], batch_size):
        sim = test[start : start + batch_size] @ train.T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top_sim = np.take_along_axis(sim, top, axis=1)
        votes = np.zeros((sim.shape[0], num_classes), np.float64)
        np.add.at(
            votes, (np.arange(sim.shape[0])[:, None], labels[top]), np.exp(top_sim / temperature)
        )
        out[start : start + batch_size] = votes.argmax(1)
    return out


def knn_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Fraction of ``test_features`` whose k-NN vote (:func:`knn_predict`) is right."""
    pred = knn_predict(train_features, train_labels, test_features, k, temperature)
    return float((pred == np.asarray(test_labels)).mean())


__all__ = ["knn_accuracy", "knn_predict"]
