"""Hutchinson's trace estimate against exact traces of small quadratics."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.analysis import hutchinson_trace, loss_hessian_trace
from jaxprune.models.vision import MLPConfig, VisionModel


def symmetric(n, seed=0):
    a = np.random.default_rng(seed).normal(size=(n, n))
    return ((a + a.T) / 2 + n * np.eye(n)).astype(np.float32)


def test_matches_the_exact_trace_of_a_quadratic():
    a = symmetric(12)
    result = hutchinson_trace(lambda x: 0.5 * x @ jnp.asarray(a) @ x, jnp.zeros(12), samples=400)
    exact = float(np.trace(a))
    # Within 4 standard errors, and the standard error is the closed form's.
    assert abs(result.trace - exact) < 4 * result.stderr
    off = a - np.diag(np.diag(a))
    assert result.stderr == pytest.approx(np.sqrt(2 * np.sum(off**2) / 400), rel=0.2)


def test_a_diagonal_hessian_is_exact_from_every_sample():
    d = np.asarray([1.0, -2.0, 3.5, 0.25], np.float32)
    result = hutchinson_trace(lambda x: 0.5 * jnp.sum(jnp.asarray(d) * x**2), jnp.ones(4), 5)
    np.testing.assert_allclose(result.samples, np.full(5, d.sum()), rtol=1e-6)


def test_pytree_params_sum_their_blocks():
    a, b = symmetric(5, 1), symmetric(3, 2)

    def fn(p):
        return 0.5 * p["u"] @ jnp.asarray(a) @ p["u"] + 0.5 * p["v"] @ jnp.asarray(b) @ p["v"]

    params = {"u": jnp.zeros(5), "v": jnp.zeros(3)}
    result = hutchinson_trace(fn, params, samples=300, seed=3)
    assert abs(result.trace - float(np.trace(a) + np.trace(b))) < 4 * result.stderr
    again = hutchinson_trace(fn, params, samples=300, seed=3)
    np.testing.assert_array_equal(result.samples, again.samples)


def test_loss_hessian_trace_of_a_network_is_positive_near_a_fit():
    model = VisionModel(MLPConfig(hidden=(8,), image_size=4))
    params, stats = model.init(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4, 4, 1)).astype(np.float32)
    y = rng.integers(0, 10, 32).astype(np.int32)
    result = loss_hessian_trace(model, params, stats, x, y, samples=30)
    assert result.trace > 0 and np.isfinite(result.stderr)


def test_needs_a_sample():
    with pytest.raises(ValueError, match="at least one"):
        hutchinson_trace(lambda x: jnp.sum(x**2), jnp.ones(2), samples=0)
