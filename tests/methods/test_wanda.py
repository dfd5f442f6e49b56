"""Wanda: exact per-output counts and N:M groups, masks equal to a NumPy reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from layers import layer, stats_of, wanda_reference

from jaxprune.core.select import num_pruned
from jaxprune.core.sparsity import NM, Unstructured
from jaxprune.methods import magnitude, wanda


@pytest.mark.parametrize("shape", [(64, 48), (96, 40), (130, 24)])
@pytest.mark.parametrize("target", [Unstructured(0.5), Unstructured(0.7), NM(2, 4)], ids=str)
def test_wanda_matches_numpy_reference(shape, target):
    if isinstance(target, NM) and shape[0] % target.m:
        pytest.skip("N:M needs in % m == 0")
    kernel, x = layer(np.random.default_rng(shape[0]), *shape)
    new, keep = wanda.solve(kernel, stats_of(x), target)
    np.testing.assert_array_equal(np.asarray(keep), wanda_reference(kernel, x, target))
    np.testing.assert_array_equal(np.asarray(new), np.where(keep, kernel, 0.0))
    magnitude_keep = magnitude.solve(kernel, None, target)[1]
    assert not np.array_equal(np.asarray(keep), np.asarray(magnitude_keep))


@settings(max_examples=15, deadline=None)
@given(
    d_in=st.integers(1, 40),
    d_out=st.integers(1, 12),
    sparsity=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**16),
)
def test_wanda_prunes_exactly_floor_s_in_per_output_column(d_in, d_out, sparsity, seed):
    kernel, x = layer(np.random.default_rng(seed), d_in, d_out, tokens=4)
    new, keep = wanda.solve(kernel, stats_of(x), Unstructured(sparsity))
    zeros_per_column = d_in - np.asarray(keep).sum(axis=0)
    assert np.all(zeros_per_column == num_pruned(sparsity, d_in))
    assert np.all(np.asarray(new)[~np.asarray(keep)] == 0)


@pytest.mark.parametrize("target", [NM(2, 4), NM(1, 4), NM(3, 8)], ids=str)
def test_nm_groups_keep_exactly_n_of_every_m_inputs(target):
    kernel, x = layer(np.random.default_rng(3), 64, 24)
    kernel[:8] = 0.0  # ties of zeros must still give exact groups
    new, keep = wanda.solve(kernel, stats_of(x), target)
    kept = np.asarray(keep).reshape(64 // target.m, target.m, 24).sum(axis=1)
    assert np.all(kept == target.n)
    assert np.all(np.asarray(new)[~np.asarray(keep)] == 0)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda k, s: wanda.solve(k, None, Unstructured(0.5)), "squared input norms"),
        (lambda k, s: wanda.solve(k, stats_of(np.ones((2, 5))), Unstructured(0.5)), r"\(64,\)"),
        (lambda k, s: wanda.solve(k[:, 0], s, Unstructured(0.5)), "2-D"),
        (lambda k, s: wanda.solve(k[:62], stats_of(np.ones((2, 62))), NM(2, 4)), "multiple of 4"),
    ],
)
def test_bad_arguments_are_clear_errors(call, match):
    kernel, x = layer(np.random.default_rng(7), 64, 8)
    with pytest.raises(ValueError, match=match):
        call(kernel, stats_of(x))
