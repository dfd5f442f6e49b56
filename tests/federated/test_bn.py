"""Pooled BatchNorm statistics equal those of the clients' data concatenated (every layer, the
spread of the client means included); pooling moments is Chan's merge."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxprune.federated.bn import BatchNormMoments, bn_layers, pool, pooled_statistics


def test_pool_matches_numpy_on_the_union():
    rng = np.random.default_rng(0)
    parts = [rng.normal(loc=m, size=(n, 3)) for m, n in [(0.0, 7), (3.0, 20), (-2.0, 4)]]
    moments = BatchNormMoments(
        jnp.array([len(p) for p in parts], jnp.float32),
        jnp.array([p.mean(0) for p in parts], jnp.float32),
        jnp.array([p.var(0) for p in parts], jnp.float32),
    )
    pooled = pool(moments)
    union = np.concatenate(parts)
    np.testing.assert_allclose(pooled.mean, union.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled.var, union.var(0), rtol=1e-5)
    assert float(pooled.count) == len(union)


def test_pooled_statistics_equal_those_of_the_concatenated_data(tiny_model, tiny_data):
    params, stats = tiny_model.init(0)
    # Non-IID clients: one class each (their BatchNorm inputs have different means), unequal sizes.
    order = np.argsort(tiny_data.labels, kind="stable")
    clients = [tiny_data.images[order[a:b]] for a, b in [(0, 32), (32, 50), (50, 96)]]
    pooled, sent = pooled_statistics(tiny_model, params, stats, clients, batch_size=16)
    # Reference: the BatchNorm inputs over all images at once, in float64, with the pooled
    # statistics in every earlier layer (what one pass over the union would normalise with).
    _, taps = tiny_model.capture(params, pooled, jnp.asarray(np.concatenate(clients)))
    for i, layer in enumerate(bn_layers(tiny_model, params, stats, jnp.asarray(clients[0][:1]))):
        assert layer == f"convs/{i}/bn"
        x = np.asarray(taps[f"convs/{i}/conv:out"], np.float64).reshape(-1, 6 if i else 4)
        got = pooled["convs"][i]["bn"]
        np.testing.assert_allclose(got["mean"], x.mean(0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got["var"], x.var(0), rtol=1e-4, atol=1e-6)
    # Three clients, two layers of 4 and 6 channels: a count and 2 float32 vectors each.
    assert sent == 3 * ((4 + 8 * 4) + (4 + 8 * 6))


def test_averaging_client_variances_underestimates_on_non_iid_data(tiny_model, tiny_data):
    params, stats = tiny_model.init(0)
    clients = [tiny_data.images[tiny_data.labels == c] for c in range(3)]
    pooled, _ = pooled_statistics(tiny_model, params, stats, clients)
    naive = np.mean(
        [
            pooled_statistics(tiny_model, params, stats, [x])[0]["convs"][0]["bn"]["var"]
            for x in clients
        ],
        axis=0,
    )
    assert np.all(np.asarray(pooled["convs"][0]["bn"]["var"]) > naive)
