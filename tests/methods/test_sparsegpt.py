"""SparseGPT against a plain float64 NumPy transcription of the reference algorithm."""

import math
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.core.sparsity import NM, Unstructured
from jaxprune.methods import get_method, magnitude, sparsegpt, sparsegpt_sweep, statistics, wanda


def correlated_inputs(rng, tokens, d_in, dead=()):
    """Inputs with strongly correlated features (what makes second-order updates worthwhile)."""
    mix = np.eye(d_in) + rng.normal(size=(d_in, d_in)) / np.sqrt(d_in)
    x = rng.normal(size=(tokens, d_in)) @ mix
    x[:, list(dead)] = 0.0
    return x.astype(np.float32)


def stats_of(x, with_hessian=True):
    return statistics.accumulate(statistics.init_stats(x.shape[1], with_hessian), jnp.asarray(x))


def reference(kernel, hessian, target, blocksize, percdamp=0.01):
    """SparseGPT as the paper's code writes it: torch layout (out, in), float64, Python loops.

    Selection: exactly ⌊s·count⌋ per block (first of a stable sort) and, for N:M, the m−n smallest
    of each group per output row (first of a stable sort), the tie rules jaxprune documents.
    """
    w = np.asarray(kernel, np.float64).T.copy()
    h = np.asarray(hessian, np.float64).copy()
    rows, cols = w.shape
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices(cols)] += percdamp * np.mean(np.diag(h))
    low_inv = np.linalg.inv(np.linalg.cholesky(h))
    upper = np.linalg.cholesky(low_inv.T @ low_inv).T
    pruned = np.zeros(w.shape, bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].copy()
        q1 = np.zeros_like(w1)
        err1 = np.zeros_like(w1)
        u1 = upper[i1:i2, i1:i2]
        d = np.diag(u1)
        mask1 = np.zeros(w1.shape, bool)
        if isinstance(target, Unstructured):
            score = w1**2 / d[None, :] ** 2
            k = math.floor(round(target.sparsity * score.size, 6))
            mask1.ravel()[np.argsort(score.ravel(), kind="stable")[:k]] = True
        for i in range(i2 - i1):
            if isinstance(target, NM) and i % target.m == 0:
                group = slice(i, i + target.m)
                score = w1[:, group] ** 2 / d[None, group] ** 2
                order = np.argsort(score, axis=1, kind="stable")[:, : target.m - target.n]
                np.put_along_axis(mask1[:, group], order, True, axis=1)
            q = np.where(mask1[:, i], 0.0, w1[:, i])
            q1[:, i] = q
            err = (w1[:, i] - q) / d[i]
            w1[:, i:] -= np.outer(err, u1[i, i:])
            err1[:, i] = err
        w[:, i1:i2] = q1
        pruned[:, i1:i2] = mask1
        w[:, i2:] -= err1 @ upper[i1:i2, i2:]
    return w.T, ~pruned.T


CASES = [
    # (d_in, d_out, blocksize, dead inputs)
    (64, 48, 32, ()),
    (96, 40, 32, (3, 50)),
    (130, 24, 32, ()),  # last block of 2 inputs
    (130, 24, 128, (0, 129)),
    (132, 24, 32, (7,)),  # N:M-compatible with a partial last block
]


@pytest.mark.parametrize("d_in,d_out,blocksize,dead", CASES)
@pytest.mark.parametrize("target", [Unstructured(0.5), Unstructured(0.7), NM(2, 4)], ids=str)
def test_matches_numpy_reference(d_in, d_out, blocksize, dead, target):
    if isinstance(target, NM) and d_in % target.m:
        pytest.skip("N:M needs in % m == 0")
    rng = np.random.default_rng(d_in * 1000 + d_out)
    x = correlated_inputs(rng, 4 * d_in, d_in, dead)
    kernel = rng.normal(size=(d_in, d_out)).astype(np.float32)
    h = statistics.hessian(stats_of(x))
    new, keep = sparsegpt.prune_kernel(kernel, h, target, blocksize=blocksize)
    ref_new, ref_keep = reference(kernel, h, target, blocksize)
    np.testing.assert_array_equal(np.asarray(keep), ref_keep)
    np.testing.assert_allclose(np.asarray(new), ref_new, atol=1e-4, rtol=0)
    assert np.all(np.asarray(new)[~ref_keep] == 0)
    assert np.all(np.asarray(new)[list(dead)] == 0)


def test_unstructured_prunes_exact_count_per_block():
    rng = np.random.default_rng(1)
    d_in, d_out, blocksize = 130, 24, 32
    x = correlated_inputs(rng, 300, d_in)
    kernel = rng.normal(size=(d_in, d_out)).astype(np.float32)
    _, keep = sparsegpt.prune_kernel(
        kernel, statistics.hessian(stats_of(x)), Unstructured(0.7), blocksize=blocksize
    )
    pruned = ~np.asarray(keep)
    for start in range(0, d_in, blocksize):
        block = pruned[start : start + blocksize]
        assert block.sum() == math.floor(0.7 * block.size + 1e-9)


def test_nm_groups_have_exactly_m_minus_n_zeros():
    rng = np.random.default_rng(2)
    x = correlated_inputs(rng, 200, 64)
    kernel = rng.normal(size=(64, 40)).astype(np.float32)
    new, keep = sparsegpt.prune_kernel(
        kernel, statistics.hessian(stats_of(x)), NM(2, 8), blocksize=32
    )
    kept = np.asarray(keep).reshape(8, 8, 40).sum(axis=1)
    assert np.all(kept == 2)
    assert np.all((np.asarray(new) != 0) == np.asarray(keep))


def test_zero_sparsity_leaves_weights_unchanged():
    rng = np.random.default_rng(3)
    x = correlated_inputs(rng, 200, 96)
    kernel = rng.normal(size=(96, 40)).astype(np.float32)
    new, keep = sparsegpt.prune_kernel(
        kernel, statistics.hessian(stats_of(x)), Unstructured(0.0), blocksize=32
    )
    np.testing.assert_array_equal(np.asarray(new), kernel)
    assert np.asarray(keep).all()


def relative_error(x, kernel, new):
    y = x.astype(np.float64) @ np.asarray(kernel, np.float64)
    return np.sum((y - x @ np.asarray(new, np.float64)) ** 2) / np.sum(y**2)


@pytest.mark.parametrize("target", [Unstructured(0.5), Unstructured(0.7), NM(2, 4)], ids=str)
def test_reconstruction_error_beats_magnitude_and_wanda(target):
    rng = np.random.default_rng(4)
    x = correlated_inputs(rng, 512, 96)
    x *= rng.lognormal(0.0, 1.0, size=96).astype(np.float32)  # uneven feature scales, as in LLMs
    kernel = rng.normal(size=(96, 40)).astype(np.float32)
    stats = stats_of(x)
    errors = {
        name: relative_error(x, kernel, module.solve(kernel, stats, target)[0])
        for name, module in (("magnitude", magnitude), ("wanda", wanda), ("sparsegpt", sparsegpt))
    }
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors


def test_rank_deficient_inputs_give_finite_results():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(20, 64)).astype(np.float32)  # fewer tokens than features
    x[:, 32:] = x[:, :32]  # duplicated features
    kernel = rng.normal(size=(64, 48)).astype(np.float32)
    stats = stats_of(x)
    for target in (Unstructured(0.5), NM(2, 4)):
        for module in (sparsegpt, wanda):
            new, keep = module.solve(kernel, stats, target)
            assert np.all(np.isfinite(np.asarray(new)))
            assert np.all(np.asarray(new)[~np.asarray(keep)] == 0)


def test_failed_cholesky_retries_with_tenfold_damping():
    rng = np.random.default_rng(6)
    x = correlated_inputs(rng, 200, 64)
    h = np.asarray(statistics.hessian(stats_of(x)), np.float64)
    # An indefinite "Hessian": 1% damping cannot repair a diagonal entry of -5% of the mean.
    h[0, :] = h[:, 0] = 0.0
    h[0, 0] = -0.05 * np.mean(np.diag(h))
    kernel = rng.normal(size=(64, 48)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="percdamp=0.1"):
        new, keep = sparsegpt.prune_kernel(kernel, h.astype(np.float32), Unstructured(0.5))
    ref_new, ref_keep = reference(kernel, h.astype(np.float32), Unstructured(0.5), 128, 0.1)
    np.testing.assert_array_equal(np.asarray(keep), ref_keep)
    np.testing.assert_allclose(np.asarray(new), ref_new, atol=1e-4, rtol=0)


def test_non_finite_hessian_is_a_clear_error():
    h = np.eye(32, dtype=np.float32)
    h[3, 5] = h[5, 3] = np.nan
    with pytest.raises(ValueError, match="not positive definite"):
        sparsegpt.prune_kernel(np.ones((32, 8), np.float32), h, Unstructured(0.5))


def test_bfloat16_kernel_is_solved_in_float32_and_keeps_its_dtype():
    rng = np.random.default_rng(7)
    x = correlated_inputs(rng, 200, 64)
    kernel = jnp.asarray(rng.normal(size=(64, 48)), jnp.bfloat16)
    h = statistics.hessian(stats_of(x))
    new, keep = sparsegpt.prune_kernel(kernel, h, Unstructured(0.5), blocksize=32)
    ref_new, ref_keep = sparsegpt.prune_kernel(
        kernel.astype(jnp.float32), h, Unstructured(0.5), blocksize=32
    )
    assert new.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(keep), np.asarray(ref_keep))
    np.testing.assert_array_equal(np.asarray(new), np.asarray(ref_new.astype(jnp.bfloat16)))


def test_one_compilation_serves_every_sparsity_of_a_shape():
    rng = np.random.default_rng(8)
    h = statistics.hessian(stats_of(correlated_inputs(rng, 100, 40)))
    kernel = rng.normal(size=(40, 24)).astype(np.float32)
    sparsegpt.prune_kernel(kernel, h, Unstructured(0.3), blocksize=16)
    before = sparsegpt_sweep.sweep._cache_size()
    for s in (0.4, 0.55, 0.9):
        sparsegpt.prune_kernel(kernel, h, Unstructured(s), blocksize=16, percdamp=0.02)
    assert sparsegpt_sweep.sweep._cache_size() == before


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"target": NM(2, 4), "blocksize": 30}, "multiples of 4"),
        ({"blocksize": 0}, "blocksize"),
        ({"percdamp": -1.0}, "percdamp"),
        ({"hessian": np.eye(48, dtype=np.float32)}, r"\(in, in\)"),
        ({"kernel": np.ones((64,), np.float32)}, "2-D"),
        ({"target": 0.5}, "Unstructured"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    args = {
        "kernel": np.ones((64, 48), np.float32),
        "hessian": np.eye(64, dtype=np.float32),
        "target": Unstructured(0.5),
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        sparsegpt.prune_kernel(args.pop("kernel"), args.pop("hessian"), args.pop("target"), **args)


def test_registry_entry_uses_the_hessian_of_the_stats():
    rng = np.random.default_rng(9)
    x = correlated_inputs(rng, 100, 32)
    kernel = rng.normal(size=(32, 16)).astype(np.float32)
    method = get_method("sparsegpt")
    assert method.statistics is statistics.HESSIAN
    stats = stats_of(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new, keep = method.solve(kernel, stats, Unstructured(0.5), **method.options)
    direct = sparsegpt.prune_kernel(kernel, statistics.hessian(stats), Unstructured(0.5))
    np.testing.assert_array_equal(np.asarray(new), np.asarray(direct[0]))
    with pytest.raises(ValueError, match="no Hessian"):
        method.solve(kernel, stats_of(x, with_hessian=False), Unstructured(0.5))


@pytest.mark.parametrize(
    "targets",
    [
        [Unstructured(0.5), Unstructured(0.5), Unstructured(0.5)],
        [Unstructured(0.3), Unstructured(0.6), Unstructured(0.7)],
        [NM(2, 4), NM(2, 4), NM(2, 4)],
    ],
    ids=["same", "different", "2:4"],
)
def test_kernels_sharing_an_input_solved_together_equal_their_own_solves(targets):
    rng = np.random.default_rng(11)
    x = correlated_inputs(rng, 200, 96)
    h = statistics.hessian(stats_of(x))
    kernels = [rng.normal(size=(96, width)).astype(np.float32) for width in (40, 24, 24)]
    together = sparsegpt.prune_kernels(kernels, h, targets, blocksize=32)
    for kernel, target, (new, keep) in zip(kernels, targets, together, strict=True):
        alone_new, alone_keep = sparsegpt.prune_kernel(kernel, h, target, blocksize=32)
        np.testing.assert_array_equal(np.asarray(keep), np.asarray(alone_keep))
        np.testing.assert_allclose(np.asarray(new), np.asarray(alone_new), atol=1e-5)


def test_mixed_kinds_of_target_are_solved_one_by_one():
    rng = np.random.default_rng(12)
    x = correlated_inputs(rng, 100, 32)
    h = statistics.hessian(stats_of(x))
    kernels = [rng.normal(size=(32, 8)).astype(np.float32) for _ in range(2)]
    mixed = sparsegpt.prune_kernels(kernels, h, [Unstructured(0.5), NM(2, 4)])
    for kernel, target, (new, keep) in zip(
        kernels, [Unstructured(0.5), NM(2, 4)], mixed, strict=True
    ):
        alone = sparsegpt.prune_kernel(kernel, h, target)
        np.testing.assert_array_equal(keep, alone[1])
        np.testing.assert_array_equal(new, alone[0])
    with pytest.raises(ValueError, match="one target per kernel"):
        sparsegpt.prune_kernels(kernels, h, [NM(2, 4)])


@pytest.mark.parametrize("target", [Unstructured(0.6), NM(2, 4)], ids=str)
def test_unrolling_the_column_loop_changes_nothing(target):
    # GPUs run the sweep unrolled; the arithmetic must be exactly the CPU's loop.
    rng = np.random.default_rng(13)
    x = correlated_inputs(rng, 100, 64)
    h = statistics.hessian(stats_of(x))
    kernel = rng.normal(size=(64, 16)).astype(np.float32)
    k, hh, counts, blocksize, nm = sparsegpt_sweep.solver_inputs(
        kernel, h, target, blocksize=32, percdamp=0.01
    )
    runs = [
        sparsegpt_sweep.sweep(
            k, hh, counts, jnp.float32(0.01), blocksize=blocksize, nm=nm, unroll=u
        )
        for u in (1, True)
    ]
    for a, b in zip(runs[0][:2], runs[1][:2], strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
