"""SparseLLM's joint MLP solver: better than per-layer SparseGPT at high sparsity, stable, exact.

Every MLP shape runs: SwiGLU (LLaMA), GELU-tanh gated (Gemma) and ReLU with biases (OPT).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxprune.core.sparsity import NM, Unstructured
from jaxprune.methods import sparsegpt, sparsellm, sparsellm_steps

D, F, T = 32, 96, 2048
# (kind, activation) of each MLP shape under test.
VARIANTS = {"swiglu": ("gated", "silu"), "geglu": ("gated", "gelu_tanh"), "relu": ("relu", "relu")}
ALL = sorted(VARIANTS)


def silu(v):
    """SiLU in a form that cannot overflow: v·sigmoid(v) = v(1 + tanh(v/2))/2."""
    return 0.5 * v * (1.0 + np.tanh(0.5 * v))


def gelu_tanh(v):
    """GELU with the tanh approximation (Hendrycks & Gimpel), written out in NumPy."""
    return 0.5 * v * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (v + 0.044715 * v**3)))


GATES = {"silu": silu, "gelu_tanh": gelu_tanh}


def gate_of(variant):
    return GATES[VARIANTS[variant][1]]


def options(variant) -> dict:
    kind, act = VARIANTS[variant]
    return {"kind": kind, "activation": act}


def make_mlp(variant: str, seed: int = 0):
    """A random MLP on correlated inputs with a few large-norm channels (like LLM activations)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, D)) @ (rng.standard_normal((D, D)) / np.sqrt(D))
    x[:, :3] *= 8.0
    if VARIANTS[variant][0] == "gated":
        kernels = {
            "gate": rng.standard_normal((D, F)) / np.sqrt(D),
            "up": rng.standard_normal((D, F)) / np.sqrt(D),
            "down": rng.standard_normal((F, D)) / np.sqrt(F),
        }
        biases = None
    else:
        kernels = {
            "in": rng.standard_normal((D, F)) / np.sqrt(D),
            "out": rng.standard_normal((F, D)) / np.sqrt(F),
        }
        biases = {
            "in": jnp.asarray(0.1 * rng.standard_normal(F), jnp.float32),
            "out": jnp.asarray(0.1 * rng.standard_normal(D), jnp.float32),
        }
    kernels = {k: jnp.asarray(v, jnp.float32) for k, v in kernels.items()}
    x = jnp.asarray(x, jnp.float32)
    y = mlp(variant, x, kernels, biases)
    return kernels, x, y, biases


def mlp(variant, x, kernels, biases):
    """Independent NumPy forward of the MLP."""
    x = np.asarray(x, np.float64)
    k = {n: np.asarray(v, np.float64) for n, v in kernels.items()}
    if VARIANTS[variant][0] == "gated":
        s, z = x @ k["gate"], x @ k["up"]
        return (gate_of(variant)(s) * z) @ k["down"]
    b = {n: np.asarray(v, np.float64) for n, v in biases.items()}
    return np.maximum(x @ k["in"] + b["in"], 0) @ k["out"] + b["out"]


def output_error(variant, x, y, kernels, biases):
    y = np.asarray(y, np.float64)
    return float(np.sum((y - mlp(variant, x, kernels, biases)) ** 2) / np.sum(y**2))


def sparsegpt_per_layer(variant, kernels, x, biases, target):
    """The sequential baseline: each linear pruned by SparseGPT on its own dense-path inputs."""
    x64 = np.asarray(x, np.float64)
    if VARIANTS[variant][0] == "gated":
        s, z = x64 @ np.asarray(kernels["gate"]), x64 @ np.asarray(kernels["up"])
        p = gate_of(variant)(s) * z
        inputs = {"gate": x64, "up": x64, "down": p}
    else:
        p = np.maximum(x64 @ np.asarray(kernels["in"]) + np.asarray(biases["in"]), 0)
        inputs = {"in": x64, "out": p}
    out = {}
    for key, inp in inputs.items():
        h = jnp.asarray(2.0 * inp.T @ inp / T, jnp.float32)
        out[key], _ = sparsegpt.prune_kernel(kernels[key], h, target)
    return out


@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("sparsity", [0.7, 0.8])
def test_beats_per_layer_sparsegpt_at_high_sparsity(variant, sparsity):
    kernels, x, y, biases = make_mlp(variant)
    target = Unstructured(sparsity)
    baseline = output_error(
        variant, x, y, sparsegpt_per_layer(variant, kernels, x, biases, target), biases
    )
    sol = sparsellm.prune_mlp(
        kernels, x, y, dict.fromkeys(kernels, target), biases=biases, **options(variant)
    )
    ours = output_error(variant, x, y, sol.kernels, sol.biases or biases)
    # Iterate 0 is exactly the per-layer SparseGPT prune; later iterates improve on it clearly.
    assert sol.output_error[0] == pytest.approx(baseline, rel=1e-3)
    assert ours == pytest.approx(min(sol.output_error), rel=1e-3)
    assert ours < 0.9 * baseline, (ours, baseline)


@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("target", [Unstructured(0.5), NM(2, 4)])
def test_never_worse_than_per_layer_sparsegpt(variant, target):
    kernels, x, y, biases = make_mlp(variant, seed=5)
    baseline = output_error(
        variant, x, y, sparsegpt_per_layer(variant, kernels, x, biases, target), biases
    )
    sol = sparsellm.prune_mlp(
        kernels,
        x,
        y,
        dict.fromkeys(kernels, target),
        biases=biases,
        iterations=3,
        **options(variant),
    )
    assert output_error(variant, x, y, sol.kernels, sol.biases or biases) <= baseline * 1.001


@pytest.mark.parametrize("variant", ALL)
def test_objective_is_reported_per_iteration_and_falls(variant):
    kernels, x, y, biases = make_mlp(variant, seed=1)
    sol = sparsellm.prune_mlp(
        kernels,
        x,
        y,
        dict.fromkeys(kernels, Unstructured(0.7)),
        biases=biases,
        iterations=5,
        **options(variant),
    )
    assert len(sol.objective) == len(sol.output_error) == 5
    assert np.all(np.isfinite(sol.objective))
    assert sol.objective[-2] < 0.7 * sol.objective[0]
    assert max(sol.objective) <= sol.objective[0] * 1.0001


@pytest.mark.parametrize("variant", ALL)
def test_variable_updates_match_their_closed_forms(variant):
    kind, act_name = VARIANTS[variant]
    dense, x, y, biases = make_mlp(variant, seed=6)
    alpha, beta, gamma = 0.7, 1.3, 2.0
    rng = np.random.default_rng(0)
    # Updates for some sparse kernels (any kernels will do) against the dense outputs y.
    kernels = {n: v * (rng.random(v.shape) > 0.5) for n, v in dense.items()}
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    k = {n: np.asarray(v, np.float64) for n, v in kernels.items()}
    b = {n: np.asarray(v, np.float64) for n, v in (biases or {}).items()}
    first, last = ("up", "down") if kind == "gated" else ("in", "out")
    u_z = x64 @ k[first] + b.get("in", 0.0)
    z = u_z + 0.3 * rng.standard_normal(u_z.shape)
    u_s = x64 @ k["gate"] if kind == "gated" else None
    s = None if u_s is None else u_s + 0.3 * rng.standard_normal(u_s.shape)
    p = rng.standard_normal(z.shape)  # ignored by the update (it only reads s and z)
    coef = {n: np.float32(v) for n, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma))}
    f32 = {n: jnp.asarray(v, jnp.float32) for n, v in k.items()}
    b32 = {n: jnp.asarray(v, jnp.float32) for n, v in b.items()}
    system = sparsellm_steps.p_system(f32[last], coef["beta"], coef["gamma"])
    new_s, new_z, new_p, err, obj = sparsellm_steps.chunk_pass(
        kind,
        act_name,
        x,
        y,
        None if s is None else jnp.asarray(s, jnp.float32),
        jnp.asarray(z, jnp.float32),
        jnp.asarray(p, jnp.float32),
        f32,
        b32,
        system,
        coef,
        s_steps=3,
        update=True,
    )
    new_z, new_p = np.asarray(new_z, np.float64), np.asarray(new_p, np.float64)
    act = gate_of(variant) if kind == "gated" else (lambda v: np.maximum(v, 0))

    # p: the normal equations p (βWWᵀ + γI) = β(Y − b)Wᵀ + γ act(s, z), solved in float64.
    a = act(s) * z if kind == "gated" else act(z)
    w = k[last]
    lhs = beta * w @ w.T + gamma * np.eye(w.shape[0])
    p_ref = np.linalg.solve(lhs, (beta * (y64 - b.get("out", 0.0)) @ w.T + gamma * a).T).T
    np.testing.assert_allclose(new_p, p_ref, rtol=1e-3, atol=1e-4 * np.abs(p_ref).max())

    if kind == "gated":
        g = act(s)
        z_ref = (alpha * u_z + gamma * g * p_ref) / (alpha + gamma * g**2)
        np.testing.assert_allclose(new_z, z_ref, rtol=1e-3, atol=1e-4 * np.abs(z_ref).max())

        # s: each element's cost never rises and falls overall.
        def s_cost(v):
            return alpha * (v - u_s) ** 2 + gamma * (p_ref - act(v) * z_ref) ** 2

        before, after = s_cost(s), s_cost(np.asarray(new_s, np.float64))
        assert np.all(after <= before + 1e-4 * (1 + before))
        assert after.sum() < 0.9 * before.sum()
    else:
        # z: the exact minimiser of α(z − u)² + γ(p − ReLU(z))², checked on a fine grid.
        idx = rng.choice(z.size, 300, replace=False)
        u, pp = u_z.ravel()[idx], p_ref.ravel()[idx]
        grid = np.linspace(-8, 8, 16001)[None, :]
        costs = alpha * (grid - u[:, None]) ** 2 + gamma * (pp[:, None] - act(grid)) ** 2
        best = costs.min(axis=1)
        mine = alpha * (new_z.ravel()[idx] - u) ** 2 + gamma * (pp - act(new_z.ravel()[idx])) ** 2
        assert np.all(mine <= best + 1e-4)

    # The chunk's output error is that of the given kernels; the objective is at the new variables.
    assert float(err) > 0.01 * float(np.sum(y64**2))
    assert float(err) == pytest.approx(
        float(np.sum((y64 - mlp(variant, x, kernels, biases)) ** 2)), rel=1e-4
    )
    new_s64 = None if new_s is None else np.asarray(new_s, np.float64)
    obj_ref = (
        alpha * np.sum((new_z - u_z) ** 2)
        + beta * np.sum((y64 - new_p @ w - b.get("out", 0.0)) ** 2)
        + gamma * np.sum((new_p - (act(new_s64) * new_z if kind == "gated" else act(new_z))) ** 2)
    )
    if kind == "gated":
        obj_ref += alpha * np.sum((new_s64 - u_s) ** 2)
    assert float(obj) == pytest.approx(obj_ref, rel=1e-3)


@pytest.mark.parametrize("variant", ["swiglu", "relu"])
@pytest.mark.parametrize("percdamp", [1e-4, 0.01, 1.0])
def test_refits_are_ridge_least_squares_with_the_given_damping(variant, percdamp):
    kind = VARIANTS[variant][0]
    _, x, y, _ = make_mlp(variant, seed=8)
    rng = np.random.default_rng(1)
    names = "szp" if kind == "gated" else "zp"
    state = {n: [jnp.asarray(rng.standard_normal((T, F)), jnp.float32)] for n in names}
    state.setdefault("s", [None])
    gram_x = sparsellm_steps.gram(x, x)
    gram_p = sparsellm_steps.gram(state["p"][0], state["p"][0])
    w, b = sparsellm_steps.refit(kind, x, y, [(0, T)], state, gram_x, gram_p, percdamp)

    def ridge(inputs, targets, bias):
        a = np.asarray(inputs, np.float64)
        if bias:
            a = np.concatenate([a, np.ones((len(a), 1))], axis=1)
        g = a.T @ a
        lam = percdamp * np.mean(np.diag(g)) + 1e-8
        return np.linalg.solve(g + lam * np.eye(len(g)), a.T @ np.asarray(targets, np.float64))

    if kind == "gated":
        expected = {
            "up": ridge(x, state["z"][0], False),
            "gate": ridge(x, state["s"][0], False),
            "down": ridge(state["p"][0], y, False),
        }
        got = w
    else:
        expected = {"in": ridge(x, state["z"][0], True), "out": ridge(state["p"][0], y, True)}
        got = {k: np.concatenate([w[k], b[k][None]], axis=0) for k in w}
    for key, ref in expected.items():
        np.testing.assert_allclose(got[key], ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())


def test_refit_percdamp_damps_the_refits_not_sparsegpt():
    kernels, x, y, _ = make_mlp("swiglu", seed=2)
    targets = dict.fromkeys(kernels, Unstructured(0.7))
    run = {"iterations": 3, **options("swiglu")}
    light = sparsellm.prune_mlp(kernels, x, y, targets, refit_percdamp=1e-4, **run)
    heavy = sparsellm.prune_mlp(kernels, x, y, targets, refit_percdamp=1.0, **run)
    # Iterate 0 (SparseGPT on the dense kernels) does not refit: the same on both.
    assert light.output_error[0] == pytest.approx(heavy.output_error[0], rel=1e-6)
    # A ridge as large as the mean diagonal pulls every refit kernel toward zero.
    assert heavy.output_error[1] > 1.5 * light.output_error[1]


@pytest.mark.parametrize("target", [Unstructured(0.5), Unstructured(0.8), NM(2, 4)])
def test_masks_are_exact_and_respected(target):
    kernels, x, y, _ = make_mlp("swiglu", seed=2)
    targets = dict.fromkeys(kernels, target)
    sol = sparsellm.prune_mlp(kernels, x, y, targets, **options("swiglu"))
    for key, kernel in sol.kernels.items():
        keep = np.asarray(sol.masks[key])
        assert not np.any(np.asarray(kernel)[~keep])
        if isinstance(target, NM):
            groups = keep.reshape(-1, target.m, keep.shape[1]).sum(axis=1)
            assert (groups <= target.n).all()
        else:
            assert 1 - keep.mean() == pytest.approx(target.sparsity, abs=0.02)


@pytest.mark.parametrize("variant", ALL)
def test_ill_conditioned_inputs_stay_finite(variant):
    kind = VARIANTS[variant][0]
    kernels, x, _, biases = make_mlp(variant, seed=3)
    x = np.array(x)
    x[:, 5] = 0.0  # a dead input channel
    x[:, 6] = x[:, 7]  # rank deficiency
    x[:, 8] = 1e-4 * x[:, 9]
    x[:, 10] *= 1e3  # a huge outlier channel
    x = jnp.asarray(x)
    # Dead hidden units: p's Gram matrix (the down/fc2 Hessian and refit) is singular.
    first = "up" if kind == "gated" else "in"
    kernels = {**kernels, first: kernels[first].at[:, :4].set(0.0)}
    if kind == "relu":
        biases = {**biases, "in": biases["in"].at[:4].set(-1.0)}
    y = jnp.asarray(mlp(variant, x, kernels, biases), jnp.float32)
    sol = sparsellm.prune_mlp(
        kernels,
        x,
        y,
        dict.fromkeys(kernels, Unstructured(0.8)),
        biases=biases,
        iterations=4,
        chunk_tokens=500,
        **options(variant),
    )
    for arr in [*sol.kernels.values(), *sol.biases.values()]:
        assert np.isfinite(np.asarray(arr)).all()
    assert np.all(np.isfinite(sol.output_error)) and np.all(np.isfinite(sol.objective))


def test_chunking_does_not_change_the_result():
    kernels, x, y, _ = make_mlp("swiglu", seed=4)
    targets = dict.fromkeys(kernels, Unstructured(0.7))
    whole = sparsellm.prune_mlp(kernels, x, y, targets, iterations=3, **options("swiglu"))
    chunked = sparsellm.prune_mlp(
        kernels, x, y, targets, iterations=3, chunk_tokens=700, **options("swiglu")
    )
    np.testing.assert_allclose(whole.output_error, chunked.output_error, rtol=1e-3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "gelu"}, "kind must be"),
        ({"activation": "gelu"}, "activation must be one of"),
        ({"kind": "relu", "activation": "silu"}, "activation must be one of"),
        ({"iterations": 0}, "iterations"),
        ({"gamma": 0.0}, "positive"),
        ({"refit_percdamp": 0.0}, "refit_percdamp must be positive"),
        ({"refit_percdamp": float("inf")}, "positive and finite"),
        ({"lr": 0.1}, "no options"),
        ({"drop": "up"}, "needs kernels"),
        ({"s_steps": -1}, "s_steps"),
        ({"chunk_tokens": 0.5}, "chunk_tokens"),
        ({"y": jnp.zeros((T - 1, D))}, "equal tokens"),
        ({"x": jnp.zeros((T, D + 1))}, "do not fit"),
        ({"x": jnp.full((T, D), jnp.nan)}, "NaN"),
    ],
)
def test_bad_input_is_a_clear_error(change, message):
    kernels, x, y, _ = make_mlp("swiglu")
    kwargs = {**options("swiglu"), **change}
    drop = kwargs.pop("drop", None)
    kernels = {k: v for k, v in kernels.items() if k != drop}
    x, y = kwargs.pop("x", x), kwargs.pop("y", y)
    targets = dict.fromkeys(kernels, Unstructured(0.5))
    with pytest.raises(ValueError, match=message):
        sparsellm.prune_mlp(kernels, x, y, targets, **kwargs)


def test_targets_may_differ_per_kernel_and_dtypes_are_kept():
    kernels, x, y, _ = make_mlp("swiglu", seed=7)
    kernels = {k: v.astype(jnp.bfloat16) for k, v in kernels.items()}
    targets = {"gate": Unstructured(0.6), "up": Unstructured(0.7), "down": NM(2, 4)}
    sol = sparsellm.prune_mlp(kernels, x, y, targets, iterations=2, **options("swiglu"))
    for key, target in targets.items():
        keep = np.asarray(sol.masks[key])
        assert sol.kernels[key].dtype == jnp.bfloat16
        assert not np.any(np.asarray(sol.kernels[key], np.float32)[~keep])
        assert 1 - keep.mean() == pytest.approx(target.sparsity, abs=0.02)
    assert len(sol.objective) == len(sol.output_error) == 2


def test_relu_needs_biases():
    kernels, x, y, _ = make_mlp("relu")
    with pytest.raises(ValueError, match="biases"):
        sparsellm.prune_mlp(
            kernels, x, y, dict.fromkeys(kernels, Unstructured(0.5)), **options("relu")
        )


@pytest.mark.parametrize("name", sorted(sparsellm_steps.ACTIVATIONS))
def test_activations_and_derivatives_match_independent_references(name):
    act = sparsellm_steps.ACTIVATIONS[name]
    v = np.linspace(-12.0, 12.0, 4801)
    torch_fn = {
        "silu": torch.nn.functional.silu,
        "gelu_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
    }[name]
    expected = torch_fn(torch.as_tensor(v)).numpy()  # float64, what transformers' models run
    np.testing.assert_allclose(np.asarray(act.fn(jnp.asarray(v, jnp.float32))), expected, atol=2e-6)
    np.testing.assert_allclose(GATES[name](v), expected, atol=1e-12)
    # The derivative against central differences of the float64 reference, and against autodiff.
    h = 1e-5
    numeric = (GATES[name](v + h) - GATES[name](v - h)) / (2 * h)
    ours = np.asarray(act.derivative(jnp.asarray(v, jnp.float32)))
    np.testing.assert_allclose(ours, numeric, atol=1e-5)  # float32 tanh saturates near ±12
    autodiff = np.asarray(jax.vmap(jax.grad(act.fn))(jnp.asarray(v, jnp.float32)))
    np.testing.assert_allclose(ours, autodiff, atol=1e-5)
