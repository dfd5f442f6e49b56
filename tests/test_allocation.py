"""OWL allocation and per-path overrides."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune import allocation
from jaxprune.core.sparsity import NM, Unstructured


def test_owl_matches_the_papers_formula_when_nothing_clips():
    ratios = np.array([0.01, 0.03, 0.02, 0.05])
    target, lam = 0.7, 0.08
    got = allocation.owl_sparsities(ratios, target, lam)
    # The OWL recipe: min-max scale to [0, 2λ], keep = d - mean(d) + (1 - target).
    d = (ratios - ratios.min()) / (ratios.max() - ratios.min()) * 2 * lam
    np.testing.assert_allclose(got, 1 - (d - d.mean() + (1 - target)), atol=1e-9)
    assert got.argmin() == ratios.argmax()  # most outliers → least pruned
    assert got.max() - got.min() == pytest.approx(2 * lam)


@settings(max_examples=50, deadline=None)
@given(
    ratios=st.lists(st.floats(0.0, 0.2), min_size=1, max_size=12),
    target=st.floats(0.0, 0.95),
    lam=st.floats(0.0, 0.3),
    seed=st.integers(0, 1000),
)
def test_owl_size_weighted_mean_is_exactly_the_target(ratios, target, lam, seed):
    sizes = np.random.default_rng(seed).integers(1, 100, size=len(ratios))
    got = allocation.owl_sparsities(ratios, target, lam, sizes=sizes)
    assert np.dot(got, sizes) / sizes.sum() == pytest.approx(target, abs=1e-9)
    assert (got >= 0).all() and (got < 1).all()


def test_equal_ratios_give_uniform_sparsity():
    np.testing.assert_allclose(allocation.owl_sparsities([0.1] * 5, 0.6), 0.6)


def test_outlier_ratio_pools_the_block():
    a = np.ones((10, 10), np.float32)
    a[0, 0] = 100.0  # mean ≈ 1.99; one entry above 5x the mean
    b = np.ones((5, 20), np.float32)
    assert allocation.outlier_ratio([a, b], m=5) == pytest.approx(1 / 200)
    assert allocation.outlier_ratio([a, b], m=100) == 0.0


def test_overrides_later_pattern_wins_and_accepts_text():
    alloc = allocation.uniform(
        ["layers/0/mlp/up/kernel", "layers/0/attn/q/kernel"], Unstructured(0.5)
    )
    got = allocation.apply_overrides(alloc, {r".*/mlp/.*": 0.7, r"layers/0/mlp/up/kernel": "2:4"})
    assert got["layers/0/mlp/up/kernel"] == NM(2, 4)
    assert got["layers/0/attn/q/kernel"] == Unstructured(0.5)


def test_override_matching_nothing_is_an_error():
    alloc = allocation.uniform(["a/kernel"], Unstructured(0.5))
    with pytest.raises(ValueError, match="matches none"):
        allocation.apply_overrides(alloc, {"b/.*": 0.3})


def test_owl_rejects_bad_arguments():
    with pytest.raises(ValueError, match="target"):
        allocation.owl_sparsities([0.1], 1.0)
    with pytest.raises(ValueError, match="sizes"):
        allocation.owl_sparsities([0.1, 0.2], 0.5, sizes=[1])
