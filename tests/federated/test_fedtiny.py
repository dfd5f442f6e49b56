"""FedTiny's pieces: the cosine swap count, clients' top-k messages, prune-and-grow at exactly the
same density, selection of the lowest pooled-statistics loss, and accounting in bytes."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune.federated import FedConfig, FedTinyConfig, federated_train, select_candidate
from jaxprune.federated.accounting import client_peak_bytes, model_bytes, topk_bytes
from jaxprune.federated.fedtiny import (
    apply,
    client_topk,
    gradient_memory,
    initial_masks,
    prune_and_grow,
    swap_count,
)


def test_swap_count_follows_the_cosine_schedule():
    assert swap_count(0.2, 0, 100, 1000) == 200
    assert swap_count(0.2, 50, 100, 1000) == 100
    assert swap_count(0.2, 25, 100, 1000) == math.floor(0.1 * (1 + math.cos(math.pi / 4)) * 1000)
    assert swap_count(0.2, 100, 100, 1000) == 0
    assert swap_count(0.2, 101, 100, 1000) == 0


def test_client_topk_sends_the_largest_inactive_gradients():
    grad = jnp.array([5.0, -4.0, 3.0, -2.0, 1.0, 0.5])
    keep = jnp.array([True, False, False, True, False, False])
    msg = client_topk(grad, keep, 2)
    np.testing.assert_array_equal(msg, [0.0, -4.0, 3.0, 0.0, 0.0, 0.0])


@settings(max_examples=25, deadline=None)
@given(
    size=st.sampled_from([12, 48]),
    density=st.floats(0.1, 0.9),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_prune_and_grow_keeps_the_exact_density(size, density, fraction, seed):
    rng = np.random.default_rng(seed)
    keep = np.zeros(size, bool)
    keep[rng.permutation(size)[: max(1, int(density * size))]] = True
    active = int(keep.sum())
    k = min(int(fraction * active), size - active)
    weight = np.where(keep, rng.normal(size=size), 0).astype(np.float32)
    aggregated = np.where(keep, 0, rng.normal(size=size)).astype(np.float32)
    new_w, new_keep = prune_and_grow(
        jnp.asarray(weight), jnp.asarray(keep), jnp.asarray(aggregated), k
    )
    new_keep, new_w = np.asarray(new_keep), np.asarray(new_w)
    assert new_keep.sum() == active
    assert np.all(new_w[~new_keep] == 0)
    # Independent check: argsort picks the same entries (values are distinct almost surely).
    active_idx = np.flatnonzero(keep)
    dropped = set(active_idx[np.argsort(np.abs(weight[active_idx]), kind="stable")[:k]].tolist())
    inactive_idx = np.flatnonzero(~keep)
    grown = set(
        inactive_idx[np.argsort(-np.abs(aggregated[inactive_idx]), kind="stable")[:k]].tolist()
    )
    expected = (set(active_idx.tolist()) - dropped) | grown
    assert set(np.flatnonzero(new_keep).tolist()) == expected
    survivors = sorted(set(active_idx.tolist()) - dropped)
    np.testing.assert_array_equal(new_w[survivors], weight[survivors])
    assert np.all(new_w[sorted(grown)] == 0)


def test_selection_picks_the_lowest_loss_candidate(tiny_model, tiny_data):
    params, stats = tiny_model.init(0)
    data = [(tiny_data.images[i::3], tiny_data.labels[i::3]) for i in range(3)]
    config = FedTinyConfig(candidates=2, distributions=("erk", "uniform"))
    winner, cands, cost = select_candidate(tiny_model, params, stats, 0.3, config, data, seed=0)
    assert [c.name for c in cands] == ["erk/0", "erk/1", "uniform/0", "uniform/1"]
    assert winner.loss == min(c.loss for c in cands)
    assert len({float(c.loss) for c in cands}) == 4
    for c in cands:
        kept = sum(int(m.sum()) for m in c.masks.values())
        total = sum(m.size for m in c.masks.values())
        assert abs(kept / total - 0.3) < 0.02
    # Down: each candidate with its pooled statistics to 3 clients. Up: per candidate and client,
    # BatchNorm moments (a count and two vectors of 4 and of 6 channels) and one float32 loss.
    sent = sum(model_bytes(apply(params, c.masks), c.masks, c.stats) for c in cands)
    assert cost["down"] == 3 * sent
    assert cost["up"] == 4 * 3 * ((4 + 8 * 4) + (4 + 8 * 6) + 4)


def test_fedtiny_run_keeps_its_density_and_counts_its_bytes(tiny_model, tiny_data):
    clients = [np.arange(0, 40), np.arange(40, 70), np.arange(70, 96)]
    config = FedConfig(rounds=4, clients_per_round=2, batch_size=8, seed=0, eval_every=2)
    tiny = FedTinyConfig(candidates=1, every=1, end=3, alpha=0.3)
    result = federated_train(
        tiny_model,
        tiny_data,
        clients,
        config,
        "fedtiny",
        0.3,
        fedtiny_config=tiny,
        eval_set=tiny_data,
    )
    densities = {h["density"] for h in result.history}
    assert len(densities) == 1 and abs(densities.pop() - 0.3) < 0.02
    assert [h.get("swapped", 0) > 0 for h in result.history] == [True, True, False, False]
    last = result.history[-1]
    message = model_bytes(result.params, result.masks, result.stats)
    assert last["bytes_down"] == 2 * message and last["bytes_up"] == 2 * message
    for path, keep in result.masks.items():
        leaf = result.params
        for part in path.split("/"):
            leaf = leaf[int(part)] if part.isdigit() and int(part) in leaf else leaf[part]
        assert np.all(np.asarray(leaf)[~np.asarray(keep)] == 0)
    assert "test_accuracy" in last


def test_warm_up_trains_every_candidate_before_the_selection(tiny_model, tiny_data):
    clients = [np.arange(0, 40), np.arange(40, 70), np.arange(70, 96)]
    config = FedConfig(rounds=3, clients_per_round=2, batch_size=8, seed=0, eval_every=1)
    tiny = FedTinyConfig(candidates=2, distributions=("erk",), every=1, end=0, warmup_rounds=1)
    result = federated_train(
        tiny_model, tiny_data, clients, config, "fedtiny", 0.3, fedtiny_config=tiny,
        eval_set=tiny_data,
    )  # fmt: skip
    # One warm-up round, then rounds 2 and 3 of the same budget.
    assert [h["round"] for h in result.history] == [2, 3]
    cold = FedTinyConfig(candidates=2, distributions=("erk",), every=1, end=0)
    at_init = federated_train(
        tiny_model, tiny_data, clients, config, "fedtiny", 0.3, fedtiny_config=cold
    )
    warm_losses, cold_losses = result.selection["losses"], at_init.selection["losses"]
    assert set(warm_losses) == set(cold_losses) == {"erk/0", "erk/1"}
    # Trained candidates have lower losses than the same masks at initialisation.
    assert all(warm_losses[k] < cold_losses[k] for k in warm_losses)
    # The warm-up's bytes (2 candidates x 1 round x 2 clients, down and up) arrive with round 2.
    assert result.history[0]["bytes_down"] > at_init.history[1]["bytes_down"]
    with pytest.raises(ValueError, match="warmup_rounds"):
        federated_train(
            tiny_model, tiny_data, clients, config, "fedtiny", 0.3,
            fedtiny_config=FedTinyConfig(warmup_rounds=3),
        )  # fmt: skip


def test_gradient_memory_measures_the_full_dense_gradient(tiny_model, tiny_data):
    params, stats = tiny_model.init(0)
    x = tiny_data.images[:16].reshape(2, 8, 8, 8, 1)
    y = tiny_data.labels[:16].reshape(2, 8)
    memory = gradient_memory(tiny_model, params, stats, x, y)
    # The step returns every leaf's dense gradient at once (not one block at a time).
    leaves = jax.tree.leaves(params)
    dense = sum(np.asarray(v).nbytes for v in leaves)
    assert dense <= memory["outputs"] <= dense + 64 * len(leaves)  # XLA pads small buffers
    assert memory["peak"] == memory["arguments"] + memory["outputs"] + memory["temporaries"]
    assert memory["arguments"] >= dense + x.astype(np.float32).nbytes


def test_accounting_by_hand():
    params = {"w": jnp.zeros((4, 4)), "b": jnp.zeros(4)}
    masks = {"w": jnp.arange(16).reshape(4, 4) < 5}
    # w: 5 values + 2 mask bytes; b: 4 values; stats: 3 values.
    assert model_bytes(params, masks, {"m": jnp.zeros(3)}) == 4 * 5 + 2 + 4 * 4 + 4 * 3
    assert model_bytes(params, None) == 4 * 20
    # weights (22 + 16) + gradients (20 + 16) + one momentum slot (36) + the dense w block (64)
    assert client_peak_bytes(params, masks, 1, dense_block=True) == 38 + 36 + 36 + 64
    assert topk_bytes({"w": 3, "v": 2}) == 40


def test_magnitude_masks_keep_the_largest_weights():
    params = {"layer": {"kernel": jax.random.normal(jax.random.PRNGKey(0), (10, 20))}}
    masks = initial_masks(params, 0.25, "uniform", "magnitude")
    w = np.abs(np.asarray(params["layer"]["kernel"])).ravel()
    keep = np.asarray(masks["layer/kernel"]).ravel()
    assert keep.sum() == 50 and w[keep].min() >= w[~keep].max()
