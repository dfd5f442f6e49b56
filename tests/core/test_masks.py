"""Laws of the mask core: exact counts, N:M groups, idempotence, path selection."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune.core import masks, paths

# Every example is a new shape, so a new compilation: 15 examples keep the file under a minute.
SETTINGS = settings(max_examples=8, deadline=None)


def _scores(seed: int, shape: tuple[int, ...], ties: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values: ties must still give exact counts
        return rng.integers(0, 3, size=shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


@SETTINGS
@given(
    d_in=st.integers(1, 40),
    d_out=st.integers(1, 12),
    sparsity=st.floats(0.0, 0.99),
    seed=st.integers(0, 10_000),
    ties=st.booleans(),
)
def test_per_output_mask_removes_exactly_floor_s_in_per_column(d_in, d_out, sparsity, seed, ties):
    scores = _scores(seed, (d_in, d_out), ties)
    keep = np.asarray(masks.mask_per_output(scores, sparsity))
    expected = math.floor(round(sparsity * d_in, 6))
    assert (np.sum(~keep, axis=0) == expected).all()
    # Every pruned score is <= every kept score of the same column.
    for j in range(d_out):
        if 0 < expected < d_in:
            assert scores[~keep[:, j], j].max() <= scores[keep[:, j], j].min()


def test_per_output_mask_matches_stable_argsort_reference():
    scores = _scores(3, (17, 5), ties=True)
    keep = np.asarray(masks.mask_per_output(scores, 0.4))
    k = math.floor(0.4 * 17)
    order = np.argsort(scores, axis=0, kind="stable")[:k]
    ref = np.ones_like(keep)
    np.put_along_axis(ref, order, False, axis=0)
    np.testing.assert_array_equal(keep, ref)


@SETTINGS
@given(
    shape=st.tuples(st.integers(1, 30), st.integers(1, 30)),
    sparsity=st.floats(0.0, 0.99),
    seed=st.integers(0, 10_000),
    ties=st.booleans(),
)
def test_per_layer_mask_removes_exactly_floor_s_size(shape, sparsity, seed, ties):
    scores = _scores(seed, shape, ties)
    keep = np.asarray(masks.mask_per_layer(scores, sparsity))
    assert np.sum(~keep) == math.floor(round(sparsity * scores.size, 6))
    if keep.any() and (~keep).any():
        assert scores[~keep].max() <= scores[keep].min()


@SETTINGS
@given(
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=4),
    sparsity=st.floats(0.0, 0.99),
    seed=st.integers(0, 10_000),
)
def test_global_mask_fixes_the_total_and_uses_one_threshold(sizes, sparsity, seed):
    scores = {f"l{i}": _scores(seed + i, (n, 3), ties=False) for i, n in enumerate(sizes)}
    keep = masks.mask_global(scores, sparsity)
    total = sum(s.size for s in scores.values())
    pruned = sum(int(np.sum(~np.asarray(k))) for k in keep.values())
    assert pruned == math.floor(round(sparsity * total, 6))
    kept_vals = np.concatenate([scores[n][np.asarray(keep[n])] for n in scores])
    cut_vals = np.concatenate([scores[n][~np.asarray(keep[n])] for n in scores])
    if kept_vals.size and cut_vals.size:
        assert cut_vals.max() <= kept_vals.min()


@SETTINGS
@given(
    groups=st.integers(1, 8),
    d_out=st.integers(1, 6),
    nm=st.sampled_from([(1, 2), (2, 4), (4, 8), (1, 4), (3, 4)]),
    seed=st.integers(0, 10_000),
    ties=st.booleans(),
)
def test_nm_mask_keeps_exactly_n_of_every_m_inputs(groups, d_out, nm, seed, ties):
    n, m = nm
    scores = _scores(seed, (groups * m, d_out), ties)
    keep = np.asarray(masks.mask_nm(scores, n, m))
    per_group = keep.reshape(groups, m, d_out).sum(axis=1)
    assert (per_group == n).all()


def test_nm_mask_needs_divisible_input_dimension():
    with pytest.raises(ValueError, match="multiple of 4"):
        masks.mask_nm(np.ones((6, 2), np.float32), 2, 4)


@SETTINGS
@given(sparsity=st.floats(0.0, 0.99), seed=st.integers(0, 10_000))
def test_masking_is_idempotent(sparsity, seed):
    w = _scores(seed, (16, 8), ties=False)
    params = {"a": {"kernel": jnp.asarray(w)}}
    keep = masks.mask_per_layer(jnp.abs(w), sparsity)
    once = masks.apply_masks(params, {"a/kernel": keep})
    twice = masks.apply_masks(once, {"a/kernel": keep})
    np.testing.assert_array_equal(once["a"]["kernel"], twice["a"]["kernel"])
    # Re-selecting on the pruned weights at the same sparsity picks the same zeros.
    again = masks.mask_per_layer(jnp.abs(once["a"]["kernel"]), sparsity)
    np.testing.assert_array_equal(
        np.asarray(once["a"]["kernel"]) == 0, ~np.asarray(again) | (w == 0)
    )


def _params():
    return {
        "embed_tokens": {"embedding": jnp.ones((5, 4))},
        "layers": {
            0: {"mlp": {"up_proj": {"kernel": jnp.arange(8.0).reshape(4, 2)}}},
            1: {"mlp": {"up_proj": {"kernel": jnp.ones((4, 2))}}},
        },
    }


def test_paths_get_and_set_with_int_block_keys():
    params = _params()
    assert paths.leaf_paths(params) == [
        "embed_tokens/embedding",
        "layers/0/mlp/up_proj/kernel",
        "layers/1/mlp/up_proj/kernel",
    ]
    leaf = paths.get_leaf(params, "layers/0/mlp/up_proj/kernel")
    assert leaf.shape == (4, 2)
    new = paths.set_leaves(params, {"layers/1/mlp/up_proj/kernel": jnp.zeros((4, 2))})
    assert float(new["layers"][1]["mlp"]["up_proj"]["kernel"].sum()) == 0
    assert float(params["layers"][1]["mlp"]["up_proj"]["kernel"].sum()) == 8  # not modified
    assert new["layers"][0] is params["layers"][0]  # untouched branches are shared
    with pytest.raises(KeyError, match="up_prj"):
        paths.get_leaf(params, "layers/0/mlp/up_prj/kernel")


def test_select_paths_by_regex_with_ignore():
    params = _params()
    got = paths.select_paths(params, r"layers/\d+/.*kernel", ignore=r"layers/1/.*")
    assert got == ["layers/0/mlp/up_proj/kernel"]


def test_select_paths_rejects_patterns_that_match_nothing():
    with pytest.raises(ValueError, match="matches no parameter"):
        paths.select_paths(_params(), [r"layers/\d+/.*kernel", r"attn/.*"])
    with pytest.raises(ValueError, match="invalid path regex"):
        paths.select_paths(_params(), "layers/(")


def test_apply_masks_accepts_a_tree_with_none_and_checks_shapes():
    params = _params()
    tree = {
        "embed_tokens": {"embedding": None},
        "layers": {
            0: {"mlp": {"up_proj": {"kernel": jnp.array([[True, False]] * 4)}}},
            1: {"mlp": {"up_proj": {"kernel": None}}},
        },
    }
    out = masks.apply_masks(params, tree)
    np.testing.assert_array_equal(out["layers"][0]["mlp"]["up_proj"]["kernel"][:, 1], 0)
    assert out["embed_tokens"] is params["embed_tokens"]
    with pytest.raises(ValueError, match="shape"):
        masks.apply_masks(params, {"layers/0/mlp/up_proj/kernel": jnp.ones((2, 2), bool)})


def test_sparsity_report_per_leaf_and_overall():
    params = {"a": jnp.array([0.0, 1.0, 0.0, 2.0]), "b": jnp.array([[0.0, 3.0]])}
    report = masks.sparsity_report(params)
    assert report["a"] == {"zeros": 2, "size": 4, "sparsity": 0.5}
    assert report["overall"] == {"zeros": 3, "size": 6, "sparsity": 0.5}


def test_bad_sparsity_is_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        masks.mask_per_layer(np.ones((2, 2)), 1.0)
