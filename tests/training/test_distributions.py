"""Distributions: ERK against its defining equations, uniform and regex targets, any pytree."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune.core.sparsity import NM, Channel, Unstructured
from jaxprune.training.distributions import by_regex, erk, erk_densities, uniform

SHAPES = {
    "conv/kernel": (3, 3, 16, 32),
    "fc/kernel": (512, 256),
    "head/kernel": (256, 10),
}


def params_of(shapes):
    tree: dict = {}
    for path, shape in shapes.items():
        node = tree
        parts = path.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = jnp.zeros(shape)
    return tree


def test_erk_density_is_eps_times_sum_over_product_and_keeps_the_budget():
    densities = erk_densities(SHAPES, 0.95)
    assert max(densities.values()) < 1.0  # no layer saturates at this sparsity
    sizes = {p: np.prod(s) for p, s in SHAPES.items()}
    raw = {p: np.sum(s) / np.prod(s) for p, s in SHAPES.items()}
    eps = {p: densities[p] / raw[p] for p in SHAPES}
    assert np.ptp(list(eps.values())) < 1e-9 * max(eps.values())  # one ε for all layers
    kept = sum(densities[p] * sizes[p] for p in SHAPES)
    assert kept == pytest.approx(0.05 * sum(sizes.values()), rel=1e-12)


def test_erk_makes_a_layer_dense_when_its_density_would_pass_one():
    shapes = {"big": (1000, 1000), "tiny": (4, 3)}
    densities = erk_densities(shapes, 0.5)
    assert densities["tiny"] == 1.0
    # The rest get the remaining budget: (1 - s)·Σn - n_tiny.
    budget = 0.5 * (1e6 + 12) - 12
    assert densities["big"] * 1e6 == pytest.approx(budget, rel=1e-12)


def test_erk_targets_cover_kernels_of_any_pytree_including_nnx_state():
    model = nnx.Linear(8, 4, rngs=nnx.Rngs(0))
    targets = erk(nnx.state(model, nnx.Param), 0.5)
    assert list(targets) == ["kernel"]
    assert targets["kernel"] == Unstructured(0.5)  # one layer: ERK is uniform


def test_uniform_takes_fractions_patterns_and_text_and_skips_vectors():
    params = params_of({**SHAPES, "fc/bias": (256,)})
    assert set(uniform(params, 0.7)) == set(SHAPES)
    assert uniform(params, "2:4", include=r"fc/kernel") == {"fc/kernel": NM(2, 4)}
    assert uniform(params, Channel(0.5), exclude=r"head/.*") == {
        "conv/kernel": Channel(0.5),
        "fc/kernel": Channel(0.5),
    }


def test_regex_map_later_patterns_win_and_zero_leaves_dense():
    params = params_of(SHAPES)
    targets = by_regex(params, {r".*/kernel": 0.9, r"head/kernel": 0.0, r"conv/kernel": "2:4"})
    assert targets == {"fc/kernel": Unstructured(0.9), "conv/kernel": NM(2, 4)}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: uniform(p, 0.5, include=r"nothing"), "no leaf selected"),
        (lambda p: uniform(p, 0.5, include=r"("), "invalid path regex"),
        (lambda p: by_regex(p, {r"missing/.*": 0.5}), "matches none"),
        (lambda p: erk(p, 1.0), r"\[0, 1\)"),
    ],
)
def test_bad_requests_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call(params_of(SHAPES))
