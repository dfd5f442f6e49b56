"""ALPS against a float64 NumPy transcription of the authors' ADMM, schedule and CG.

One kernel shape per test file (every exact-count selection costs seconds to compile), so the
ADMM program compiled for the iterate checks is the one the whole-solve checks reuse.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.core.sparsity import NM, Unstructured
from jaxprune.methods import alps, get_method, sparsegpt, statistics

D_IN, D_OUT, TOKENS = 32, 24, 256


def correlated_inputs(rng, tokens=TOKENS, d_in=D_IN, strength=1.0):
    mix = np.eye(d_in) + strength * rng.normal(size=(d_in, d_in)) / np.sqrt(d_in)
    return (rng.normal(size=(tokens, d_in)) @ mix).astype(np.float32)


def layer(seed, strength=1.0):
    rng = np.random.default_rng(seed)
    x = correlated_inputs(rng, strength=strength)
    w = rng.normal(size=(D_IN, D_OUT)).astype(np.float32)
    return x, w, (2.0 / TOKENS) * x.T.astype(np.float64) @ x


def ref_normalized(w, h, percdamp=0.01):
    h, w = np.array(h, np.float64), np.array(w, np.float64)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[dead] = 0.0
    h[np.diag_indices(len(h))] += percdamp * np.mean(np.diag(h))
    scale = np.sqrt(np.diag(h)) + 1e-8
    return h / np.outer(scale, scale), w * scale[:, None], scale


def ref_project(v, keep_count, nm):
    keep = np.zeros(v.shape, bool)
    if nm is None:
        keep.ravel()[np.argsort(-(v**2).ravel(), kind="stable")[:keep_count]] = True
    else:
        n, m = nm
        for start in range(0, v.shape[0], m):
            top = np.argsort(-(v[start : start + m] ** 2), axis=0, kind="stable")[:n]
            np.put_along_axis(keep[start : start + m], top, True, axis=0)
    return np.where(keep, v, 0.0), keep


def ref_admm(g, b0, keep_count, nm, rho=0.1, max_iter=300, update_iter=3, switch_iter=30):
    """The authors' ALPS_admm loop, line by line, in float64 and Flax layout."""
    c = g @ b0
    lam, q = np.linalg.eigh(g)

    def inverse(r):
        return (q / (lam + r)) @ q.T

    d0, keep = ref_project(b0, keep_count, nm)
    b, d, v, prev, grown = b0.copy(), d0.copy(), np.zeros_like(b0), ~keep, False
    a_inv = inverse(rho)
    for i in range(max_iter):
        b = a_inv @ (c - v + rho * d)
        d, keep = ref_project(b + v / rho, keep_count, nm)
        v = v + rho * (b - d)
        if (i + 1) % update_iter == 0:
            supp = ~keep
            change = np.sum(supp != prev)
            if change / keep_count > 0.1:
                grown, rho = True, rho * 1.3
            elif change / keep_count > 0.005:
                grown, rho = True, rho * 1.2
            elif change > 0.5:
                if grown:
                    rho *= 1.1
                else:
                    rho /= 5
                    b, d, v = b0.copy(), d0.copy(), np.zeros_like(b0)
            elif grown:
                return b, d, v, rho, i + 1
            else:
                rho /= 5
            prev, rho = supp, min(rho, 1e6)
            a_inv = inverse(rho)
            if i >= switch_iter and change / keep_count < 0.0003:
                return b, d, v, rho, i + 1
    return b, d, v, rho, max_iter


def ref_cg(g, c, keep, x, iters):
    """Plain CG per column on the support (the authors' cg_batch with the identity)."""
    mask = keep.astype(np.float64)
    r = (c - g @ x) * mask
    p, rr = r.copy(), np.sum(r * r, axis=0)
    for _ in range(iters):
        ap = g @ p
        alpha = rr / np.sum(p * ap, axis=0)
        x = x + alpha * p
        r = (r - alpha * ap) * mask
        rr_new = np.sum(r * r, axis=0)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def run_admm(g, b0, keep_count, nm, max_iter):
    args = (jnp.int32(keep_count), jnp.float32(0.1), jnp.int32(max_iter), jnp.int32(3))
    g, b0 = jnp.asarray(g, jnp.float32), jnp.asarray(b0, jnp.float32)
    return alps.admm(g, b0, *args, jnp.int32(30), nm=nm)


def layer_error(x, w, new):
    x = x.astype(np.float64)
    return np.linalg.norm(x @ (w - np.asarray(new, np.float64))) ** 2


def test_admm_iterates_and_penalty_equal_the_float64_reference_for_six_steps():
    x, w, h = layer(0)
    g, b0, _ = ref_normalized(w, h)
    keep_count = w.size - math.floor(0.7 * w.size)
    for steps in (1, 2, 3, 6):
        b, d, v, rho, iters = ref_admm(g, b0, keep_count, None, max_iter=steps)
        state = run_admm(g, b0, keep_count, None, steps)
        assert int(state.iteration) == iters == steps
        np.testing.assert_allclose(float(state.rho), rho, rtol=1e-6)
        for ours, theirs in ((state.b, b), (state.d, d), (state.v, v)):
            np.testing.assert_allclose(np.asarray(ours), theirs, rtol=2e-3, atol=2e-4)
    assert rho != 0.1  # the schedule moved ρ within the six steps


def test_the_schedule_stops_where_the_reference_stops_with_the_same_support():
    x, w, h = layer(1)
    g, b0, _ = ref_normalized(w, h)
    keep_count = w.size - math.floor(0.7 * w.size)
    b, _, _, rho, iters = ref_admm(g, b0, keep_count, None)
    state = run_admm(g, b0, keep_count, None, 300)
    assert int(state.iteration) == iters < 300
    np.testing.assert_allclose(float(state.rho), rho, rtol=1e-5)
    theirs = ref_project(b, keep_count, None)[1]
    ours = np.asarray(alps.project(state.b, jnp.int32(keep_count), None)[1])
    assert np.mean(ours == theirs) > 0.99


def test_conjugate_gradient_equals_the_reference_and_converges_to_the_restricted_solution():
    x, w, h = layer(2)
    g, b0, _ = ref_normalized(w, h)
    start, keep = ref_project(b0, w.size // 2, None)
    c = g @ b0
    args = (jnp.asarray(g, jnp.float32), jnp.asarray(c, jnp.float32), jnp.asarray(keep))
    three = alps.conjugate_gradient(*args, jnp.asarray(start, jnp.float32), 3, 1e-12)
    np.testing.assert_allclose(np.asarray(three), ref_cg(g, c, keep, start, 3), atol=1e-4)
    full = np.asarray(alps.conjugate_gradient(*args, jnp.asarray(start, jnp.float32), 200, 1e-7))
    for j in range(w.shape[1]):
        s = keep[:, j]
        exact = np.linalg.solve(g[np.ix_(s, s)], c[s, j])
        np.testing.assert_allclose(full[s, j], exact, rtol=1e-3, atol=1e-4)
        assert np.all(full[~s, j] == 0)


def test_alps_beats_sparsegpt_with_the_exact_count_on_random_and_correlated_layers():
    for seed, strength in ((3, 0.0), (4, 1.0), (5, 3.0)):
        x, w, h = layer(seed, strength)
        ours, keep, _ = alps.prune_kernel(w, jnp.asarray(h, jnp.float32), Unstructured(0.7))
        theirs, _ = sparsegpt.prune_kernel(w, jnp.asarray(h, jnp.float32), Unstructured(0.7))
        keep = np.asarray(keep)
        assert keep.sum() == w.size - math.floor(0.7 * w.size)
        assert np.all(np.asarray(ours)[~keep] == 0)
        assert layer_error(x, w, ours) <= layer_error(x, w, theirs)


@pytest.mark.slow
def test_two_four_alps_keeps_two_of_every_four_and_beats_sparsegpt():
    x, w, h = layer(6)
    g, b0, _ = ref_normalized(w, h)
    steps = 6
    b, d, v, rho, _ = ref_admm(g, b0, w.size // 2, (2, 4), max_iter=steps)
    state = run_admm(g, b0, w.size // 2, (2, 4), steps)
    np.testing.assert_allclose(np.asarray(state.b), b, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(float(state.rho), rho, rtol=1e-6)
    ours, keep, _ = alps.prune_kernel(w, jnp.asarray(h, jnp.float32), NM(2, 4))
    theirs, _ = sparsegpt.prune_kernel(w, jnp.asarray(h, jnp.float32), NM(2, 4))
    assert np.all(np.asarray(keep).reshape(D_IN // 4, 4, D_OUT).sum(1) == 2)
    assert layer_error(x, w, ours) <= layer_error(x, w, theirs)


def test_the_method_reads_the_hessian_statistic_and_refuses_bad_input():
    x, w, _ = layer(7)
    x[:, 3] = 0.0  # a dead input: SparseGPT's rule, its weights go
    method = get_method("alps")
    stats = statistics.accumulate(method.statistics.init(D_IN), jnp.asarray(x))
    new, keep = method.solve(jnp.asarray(w), stats, Unstructured(0.7), **method.options)
    assert int(np.asarray(keep).sum()) == w.size - math.floor(0.7 * w.size)
    assert np.all(np.isfinite(np.asarray(new))) and not np.asarray(keep)[3].any()
    with pytest.raises(ValueError, match="multiple of 4"):
        alps.prune_kernel(jnp.ones((30, 4)), jnp.eye(30), NM(2, 4))
    with pytest.raises(ValueError, match="rho must be a finite number > 0"):
        alps.prune_kernel(w, jnp.eye(D_IN), Unstructured(0.5), rho=0.0)
    with pytest.raises(ValueError, match="has no options"):
        alps.prune_kernel(w, jnp.eye(D_IN), Unstructured(0.5), blocksize=8)
    with pytest.raises(ValueError, match="Hessian"):
        method.solve(jnp.asarray(w), None, Unstructured(0.5), **method.options)


@pytest.mark.slow
def test_alps_runs_in_the_engine_with_the_exact_count_per_layer():
    from tiny_models import TINY_LLAMA

    from jaxprune.engine import prune
    from jaxprune.models import LanguageModel
    from jaxprune.recipes import Recipe

    model = LanguageModel(TINY_LLAMA)
    params = model.init_params(0)
    windows = np.random.default_rng(0).integers(0, 64, (4, 16))
    result = prune(model, params, windows, Recipe(method="alps", sparsity=0.6), progress=False)
    keep = np.asarray(result.masks["layers"][0]["mlp"]["down_proj"]["kernel"])
    assert keep.sum() == keep.size - math.floor(0.6 * keep.size)
    assert result.report["method"] == "alps"
