"""FedAvg's aggregation is the example-weighted mean; a one-client, full-participation run is
centralised training over the same batches; runs are deterministic for a seed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxprune.core.masks import apply_masks
from jaxprune.federated import FedConfig, federated_train, weighted_mean
from jaxprune.federated.fedtiny import initial_masks
from jaxprune.training.masked import keep_masks


def test_weighted_mean_equals_the_hand_computed_mean():
    stacked = {
        "a": jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]]),
        "b": jnp.array([2.0, 4.0, 8.0]),
    }
    out = weighted_mean(stacked, jnp.array([10.0, 20.0, 10.0]))
    # (10·1 + 20·3 + 10·5) / 40 = 3, (10·2 + 20·4 + 10·7) / 40 = 4.25, (20 + 80 + 80) / 40 = 4.5
    np.testing.assert_allclose(out["a"], [3.0, 4.25])
    np.testing.assert_allclose(out["b"], 4.5)


def test_one_client_is_returned_exactly():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 3))
    np.testing.assert_array_equal(weighted_mean(x, jnp.array([37.0])), x[0])


def _centralised(model, params, stats, data, tx, rounds, epochs, batch_size, seed):
    """Plain minibatch training on the whole set: each round restarts the optimizer (FedAvg's
    client does), each epoch is the permutation drawn from (seed, round, client 0, epoch)."""

    @jax.jit
    def step(p, s, o, x, y):
        def loss(p):
            logits, s2 = model.apply(p, s, x, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), s2

        (_, s), g = jax.value_and_grad(loss, has_aux=True)(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), s, o

    n = len(data)
    for r in range(1, rounds + 1):
        opt = tx.init(params)
        for e in range(epochs):
            order = np.random.default_rng([seed, r, 0, e]).permutation(n)
            for i in range(n // batch_size):
                index = order[i * batch_size : (i + 1) * batch_size]
                params, stats, opt = step(
                    params, stats, opt, data.images[index], data.labels[index]
                )
    return params, stats


@pytest.mark.parametrize("method", ["dense", "random"])
def test_one_client_full_participation_equals_centralised_training(tiny_model, tiny_data, method):
    config = FedConfig(
        rounds=2, clients_per_round=1, local_epochs=2, batch_size=16, learning_rate=0.1, seed=5
    )
    params, stats = tiny_model.init(5)
    result = federated_train(
        tiny_model, tiny_data, [np.arange(len(tiny_data))], config, method, density=0.3
    )
    tx, start = optax.sgd(0.1), params
    if method == "random":
        masks = initial_masks(params, 0.3, "erk", "random", seed=5)
        tx, start = keep_masks(tx, masks), apply_masks(params, masks)
    ref_params, ref_stats = _centralised(tiny_model, start, stats, tiny_data, tx, 2, 2, 16, 5)
    for got, want in zip(
        jax.tree_util.tree_leaves((result.params, result.stats)),
        jax.tree_util.tree_leaves((ref_params, ref_stats)),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert FedConfig.from_dict(result.config["federated"]) == config  # the run records its config
    assert result.config["method"] == method


def test_runs_are_deterministic_for_a_seed(tiny_model, tiny_data):
    clients = [np.arange(0, 40), np.arange(40, 70), np.arange(70, 96)]
    config = FedConfig(rounds=2, clients_per_round=2, batch_size=8, seed=1, eval_every=1)
    a = federated_train(tiny_model, tiny_data, clients, config, "random", 0.5, eval_set=tiny_data)
    b = federated_train(tiny_model, tiny_data, clients, config, "random", 0.5, eval_set=tiny_data)
    assert a.history == b.history
    for x, y in zip(
        jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params), strict=True
    ):
        np.testing.assert_array_equal(x, y)


def test_clients_one_after_another_equal_the_vmapped_clients(tiny_model, tiny_data):
    clients = [np.arange(0, 40), np.arange(40, 70), np.arange(70, 96)]
    runs = [
        federated_train(
            tiny_model,
            tiny_data,
            clients,
            FedConfig(rounds=2, clients_per_round=3, batch_size=8, seed=2, client_loop=loop),
            "magnitude",
            0.5,
        )
        for loop in ("vmap", "map")
    ]
    for a, b in zip(*(jax.tree_util.tree_leaves((r.params, r.stats)) for r in runs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
