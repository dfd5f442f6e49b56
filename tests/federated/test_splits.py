"""Dirichlet splits cover every example once, are deterministic and get more skewed as α falls;
batch plans take local_epochs·⌈n/B⌉ full batches from each client's own examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxprune.federated.splits import (
    batch_plan,
    dirichlet_split,
    label_histogram,
    max_steps,
    sample_clients,
)

LABELS = np.repeat(np.arange(10), 200)


def test_split_is_a_partition_of_the_examples():
    clients = dirichlet_split(LABELS, 20, alpha=0.5, seed=3)
    joined = np.concatenate(clients)
    assert len(clients) == 20
    np.testing.assert_array_equal(np.sort(joined), np.arange(len(LABELS)))


def test_split_is_deterministic_in_the_seed():
    a = dirichlet_split(LABELS, 10, alpha=0.1, seed=1)
    b = dirichlet_split(LABELS, 10, alpha=0.1, seed=1)
    c = dirichlet_split(LABELS, 10, alpha=0.1, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_small_alpha_concentrates_each_client_on_few_classes():
    def top_share(alpha):
        hist = label_histogram(LABELS, dirichlet_split(LABELS, 20, alpha, seed=0), 10)
        return float(np.mean(hist.max(1) / hist.sum(1)))

    assert top_share(0.1) > 0.6 > top_share(100.0)
    assert top_share(100.0) < 0.25  # near IID: the largest class is close to 1/10


def test_min_size_is_respected_and_bad_alpha_is_refused():
    clients = dirichlet_split(LABELS, 20, alpha=0.1, seed=0, min_size=10)
    assert min(len(c) for c in clients) >= 10
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_split(LABELS, 5, alpha=0.0)
    with pytest.raises(ValueError, match="fewer clients"):
        dirichlet_split(LABELS[:10], 20, alpha=1.0)


def test_sampling_draws_distinct_clients_reproducibly():
    a = sample_clients(100, 10, seed=0, round_index=4)
    assert len(set(a.tolist())) == 10 and a.max() < 100
    np.testing.assert_array_equal(a, sample_clients(100, 10, seed=0, round_index=4))
    assert not np.array_equal(a, sample_clients(100, 10, seed=0, round_index=5))


def test_batch_plan_steps_and_own_examples():
    clients = [np.arange(0, 40), np.arange(40, 45), np.arange(45, 109)]
    length = max_steps(clients, local_epochs=2, batch_size=16)
    batches, steps = batch_plan(
        clients, [0, 1, 2], local_epochs=2, batch_size=16, seed=0, round_index=1, length=length
    )
    assert steps.tolist() == [2 * math.ceil(40 / 16), 2 * 1, 2 * 4]
    assert batches.shape == (3, length, 16)
    for row, own in enumerate(clients):
        used = batches[row, : steps[row]]
        assert set(used.ravel().tolist()) <= set(own.tolist())
    # 64 examples in batches of 16: each epoch is one permutation of the client's examples.
    for epoch in range(2):
        np.testing.assert_array_equal(
            np.sort(batches[2, 4 * epoch : 4 * epoch + 4].ravel()), clients[2]
        )
