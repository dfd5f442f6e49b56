"""SparseLLM: prune a whole MLP jointly through auxiliary variables.

Bai et al., "SparseLLM: Towards Global Pruning for Pre-trained Language Models" (NeurIPS 2024,
arXiv 2402.17946). Instead of pruning each linear to reproduce its own dense output, the MLP's
intermediate activations become free variables tying the layers together. In token-row layout
(``X`` is ``(T, d)``, kernels are Flax ``(in, out)``) for a SwiGLU MLP:

    s = X W_gate,  z = X W_up,  p = SiLU(s) ⊙ z,  Y = p W_down          (dense, on entry)

    min  α‖z − X W_up‖² + α‖s − X W_gate‖² + β‖Y − p W_down‖² + γ‖p − SiLU(s) ⊙ z‖²

over sparse kernels and dense ``s, z, p``, by alternating closed-form steps. Each iteration:

1. **refit** (from the second iteration on) the dense kernels to the current variables by damped
   least squares (Cholesky of the Gram matrix): ``W_up = argmin ‖X W − z‖``, ``W_gate`` from
   ``s``, ``W_down = argmin ‖p W − Y‖``;
2. **prune** each with SparseGPT, ``W_up``/``W_gate`` with ``H = XᵀX``, ``W_down`` with ``H = pᵀp``;
   as SparseGPT minimises ‖X(W − Ŵ)‖ and the refit residual is orthogonal to the span of ``X``,
   this is the pruned least-squares fit to the variables;
3. **update** ``p ← (βYŴ_downᵀ + γa)(βŴ_downŴ_downᵀ + γI)⁻¹`` with ``a = SiLU(s)⊙z``, computed as
   ``p = a + (Y − aŴ_down)(Ŵ_downᵀŴ_down + (γ/β)I)⁻¹Ŵ_downᵀ`` (push-through identity: a ``d × d``
   Cholesky factored once per iteration instead of an ``f × f`` system, and a correction that
   vanishes as ``a`` fits ``Y``); then ``z ← (α XŴ_up + γ SiLU(s)⊙p) / (α + γ SiLU(s)²)``
   elementwise, and ``s`` by ``s_steps`` elementwise Gauss-Newton steps on
   ``α(s − XŴ_gate)² + γ(p − SiLU(s)z)²`` (a step is kept only where it lowers that cost, so the
   ``s`` update never raises the objective). The same pass over the tokens measures the true
   output error of the pruned kernels.

For an OPT/ReLU MLP (``fc1``, ``fc2`` with biases; ``z`` = fc1's pre-activation, ``p`` = fc2's
input) the same scheme runs with biases refit alongside the kernels (ones-augmented least squares),
no ``s``, and the exact piecewise minimiser of ``α(z − u)² + γ(p − ReLU(z))²`` for ``z``.

The first iteration prunes the dense kernels, so iterate 0 *is* per-layer SparseGPT; the result is
the iterate with the lowest true output error ‖Y − MLP_pruned(X)‖²/‖Y‖² on the calibration tokens
(later iterates can be worse: the auxiliary objective is not the output error itself), so
SparseLLM never does worse than SparseGPT there. ``objective`` (normalised by ‖Y‖²) is reported
after each iteration's variable updates; the last iteration prunes without updating, and reports
the objective at its pruned kernels. Should the variables ever become non-finite the solver warns
and returns the best iterate so far (the lists are then shorter than ``iterations``).

Defaults (:data:`DEFAULT_OPTIONS`) were chosen by experiment: on MLP inputs of SmolLM2-135M
(blocks 2, 15 and 28, captured from 8192-32768 Shakespeare calibration tokens) and on the tests'
random MLPs (correlated inputs, a few large-norm channels), sweeping each of α, β, γ over
0.05×-5× and up to 8 iterations, and comparing the best iterate's output error with SparseGPT's.
Only the ratios matter; β barely does (``Ŵ_downᵀŴ_down`` dominates ``γ/β`` in the p update). A small
α/γ was clearly best on the real MLPs (at 80%, block 15, 4 iterations: error ratio to SparseGPT
0.90 with α = γ, the reference code's choice, 0.80 with α = 0.2γ, 0.76 with α = 0.05γ), since z and
s then follow the p that fits Y; α = 0.1γ was the most even across blocks and sparsities. At ≥ 70%
the error keeps falling for 8+ iterations, while at 50% and 2:4 it usually bottoms out after 1-3
(the best iterate is returned); ``iterations = 6`` takes most of the gain at 6 SparseGPT passes.
With these defaults the whole SmolLM2-135M pruned to 70% (80%) reaches Hamlet perplexity 99.4
(153.3) against SparseGPT's 122.1 (376.4), and the per-MLP gains carry over to held-out text
(benchmarks/README.md).

Memory: the variables ``z, p`` (and ``s`` for SwiGLU) are kept as float32 chunks of
``chunk_tokens`` rows, each replaced in turn, and every other token-sized quantity is made one chunk
at a time (Gram and cross-covariance sums accumulate over chunks). With ``c`` = ``chunk_tokens``
the solver holds about

    4 B · (2·T·d  +  k·T·f  +  d² + 6·f²  +  9·d·f  +  c·(12·f + 4·d))      (k = 3 SwiGLU, 2 ReLU)

(``X``, ``Y`` as float32; the variables; the Gram matrices and SparseGPT's ``f × f`` work; dense,
pruned and best kernels; one chunk's temporaries). For a LLaMA-7B MLP (d = 4096, f = 11008) with
128 × 2048 tokens that is 8.6 + 34.6 + 3.0 + 1.6 + 4.9 ≈ 53 GB, within one 80 GB device (the
engine's own captured tensors come on top). Measured on CPU (d = 128, f = 1024, T = 131072): the
process grew by 1.69 GiB during the solve against 1.92 GiB predicted by the formula without X, Y.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxprune.methods import sparsegpt
from jaxprune.methods.base import check_target
from jaxprune.sparsity import Target

_HI = lax.Precision.HIGHEST

DEFAULT_OPTIONS: dict[str, Any] = {
    # Weights of the three coupling terms of the objective; only their ratios matter. A small
    # alpha lets z and s follow the p that fits Y (see the module docstring for the experiment).
    "alpha": 0.1,
    "beta": 1.0,
    "gamma": 1.0,
    # Outer iterations (iterate 0 is plain SparseGPT), each one SparseGPT pass over the kernels.
    "iterations": 6,
    # Gauss-Newton steps of the gate pre-activation s per iteration (SwiGLU only).
    "s_steps": 3,
    # SparseGPT's options; percdamp also damps the least-squares refits.
    "percdamp": 0.01,
    "blocksize": 128,
    # Token rows per chunk of the variable updates (bounds the temporaries, see the docstring).
    "chunk_tokens": 8192,
}

_KEYS = {"swiglu": ("gate_proj", "up_proj", "down_proj"), "relu": ("fc1", "fc2")}


class MlpSolution(NamedTuple):
    """The pruned MLP and how the iterations went.

    Attributes:
      kernels: the pruned Flax ``(in, out)`` kernels (input dtypes), keyed as the input.
      masks: boolean keep masks; every kernel is exactly zero outside its mask.
      biases: refit ``fc1``/``fc2`` biases (relu kind), ``{}`` for swiglu.
      objective: the objective divided by ‖Y‖² after each iteration.
      output_error: ‖Y − MLP_pruned(X)‖²/‖Y‖² of each iteration's pruned kernels.
    """

    kernels: dict[str, jax.Array]
    masks: dict[str, jax.Array]
    biases: dict[str, jax.Array]
    objective: list[float]
    output_error: list[float]


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=_HI)


@jax.jit
def _gram(a: jax.Array, b: jax.Array) -> jax.Array:
    return _mm(a.T, b)


@jax.jit
def _damped_solve(gram: jax.Array, rhs: jax.Array, percdamp: jax.Array) -> jax.Array:
    """``(G + λI)⁻¹ rhs`` by Cholesky, λ = percdamp·mean(diag G) plus a floor for G = 0."""
    damp = percdamp * jnp.mean(jnp.diagonal(gram)) + 1e-8
    lower = jnp.linalg.cholesky(gram + damp * jnp.eye(gram.shape[0], dtype=gram.dtype))
    return jax.scipy.linalg.cho_solve((lower, True), rhs)


def _pre_activations(kind: str, x: jax.Array, kernels, biases):
    """``(s, z)``: gate and up (swiglu) or ``(None, fc1)`` (relu) pre-activations of ``x``."""
    if kind == "swiglu":
        return _mm(x, kernels["gate_proj"]), _mm(x, kernels["up_proj"])
    return None, _mm(x, kernels["fc1"]) + biases["fc1"]


def _activation(kind: str, s, z):
    """The down/fc2 input from the pre-activations."""
    return jax.nn.silu(s) * z if kind == "swiglu" else jax.nn.relu(z)


@functools.partial(jax.jit, static_argnames=("kind",))
def _dense_variables(kind: str, x: jax.Array, kernels, biases):
    """``(s, z, p)`` of the dense MLP on a chunk (``s`` is ``None`` for relu)."""
    s, z = _pre_activations(kind, x, kernels, biases)
    return s, z, _activation(kind, s, z)


def _out(kind: str, p: jax.Array, kernels, biases) -> jax.Array:
    last = _KEYS[kind][-1]
    return _mm(p, kernels[last]) + biases.get(last, 0.0)


def _terms(kind, y, s, z, p, u_s, u_z, y_hat, alpha, beta, gamma) -> jax.Array:
    """The objective on a chunk, given ``u_s, u_z`` = the pruned pre-activations of ``x`` and
    ``y_hat`` = ``p`` through the pruned last layer."""
    total = alpha * jnp.sum((z - u_z) ** 2) + beta * jnp.sum((y - y_hat) ** 2)
    total += gamma * jnp.sum((p - _activation(kind, s, z)) ** 2)
    if kind == "swiglu":
        total += alpha * jnp.sum((s - u_s) ** 2)
    return total


@jax.jit
def _p_system(w_down: jax.Array, beta: jax.Array, gamma: jax.Array):
    """``WᵀW`` and the lower Cholesky factor of ``WᵀW + (γ/β)I`` (``d × d``, positive definite)."""
    wtw = _mm(w_down.T, w_down)
    eye = jnp.eye(wtw.shape[0], dtype=wtw.dtype)
    return wtw, jnp.linalg.cholesky(wtw + (gamma / beta) * eye)


@functools.partial(jax.jit, static_argnames=("kind", "s_steps", "update"))
def _chunk_pass(kind, x, y, s, z, p, kernels, biases, system, coef, *, s_steps, update):
    """One chunk: the pruned MLP's squared output error and, with ``update``, the new ``(s, z, p)``.

    Returns ``(s, z, p, squared error, objective)``; without ``update`` the variables are returned
    unchanged and the objective is taken at them.
    """
    alpha, beta, gamma = coef["alpha"], coef["beta"], coef["gamma"]
    u_s, u_z = _pre_activations(kind, x, kernels, biases)
    error = jnp.sum((y - _out(kind, _activation(kind, u_s, u_z), kernels, biases)) ** 2)
    if not update:
        y_hat = _out(kind, p, kernels, biases)
        return s, z, p, error, _terms(kind, y, s, z, p, u_s, u_z, y_hat, alpha, beta, gamma)

    # p = argmin β‖Y − pW − b‖² + γ‖p − a‖², a = act(s, z). Writing p = a + δ with the residual
    # e = Y − aW − b, the push-through identity gives δ = e (WᵀW + (γ/β)I)⁻¹ Wᵀ: a d × d solve
    # (not f × f), and a correction that is small when a already fits Y (no cancellation).
    wtw, factor = system
    last = _KEYS[kind][-1]
    a = _activation(kind, s, z)
    a_out = _out(kind, a, kernels, biases)
    c = jax.scipy.linalg.cho_solve((factor, True), (y - a_out).T).T
    p = a + _mm(c, kernels[last].T)
    y_hat = a_out + _mm(c, wtw)  # = p W + b, without another (T, f) × (f, d) product
    if kind == "relu":
        # argmin_z α(z − u)² + γ(p − ReLU(z))²: each branch's minimiser, then the better one.
        z_neg = jnp.minimum(u_z, 0.0)
        z_pos = jnp.maximum((alpha * u_z + gamma * p) / (alpha + gamma), 0.0)

        def z_cost(v):
            return alpha * (v - u_z) ** 2 + gamma * (p - jax.nn.relu(v)) ** 2

        z = jnp.where(z_cost(z_neg) <= z_cost(z_pos), z_neg, z_pos)
    else:
        act = jax.nn.silu(s)
        z = (alpha * u_z + gamma * act * p) / (alpha + gamma * act * act)

        def s_cost(v):
            return alpha * (v - u_s) ** 2 + gamma * (p - jax.nn.silu(v) * z) ** 2

        def gauss_newton(_, s):
            sig = jax.nn.sigmoid(s)
            dact = sig * (1.0 + s * (1.0 - sig))  # SiLU'(s)
            grad = alpha * (s - u_s) + gamma * (s * sig * z - p) * z * dact
            step = s - grad / (alpha + gamma * (z * dact) ** 2)
            # The cost is not convex in s; a Gauss-Newton step that overshoots is not taken.
            return jnp.where(s_cost(step) <= s_cost(s), step, s)

        s = lax.fori_loop(0, s_steps, gauss_newton, s)
    return s, z, p, error, _terms(kind, y, s, z, p, u_s, u_z, y_hat, alpha, beta, gamma)


def _augment(gram: jax.Array, col_sums: jax.Array, count: int) -> jax.Array:
    """The Gram matrix of ``[A, 1]`` from that of ``A``, its column sums and its row count."""
    top = jnp.concatenate([gram, col_sums[:, None]], axis=1)
    bottom = jnp.concatenate([col_sums, jnp.asarray([float(count)], gram.dtype)])[None, :]
    return jnp.concatenate([top, bottom], axis=0)


def _refit(kind, x, y, spans, state, gram_x, gram_p, percdamp):
    """Dense least-squares kernels (and biases) for the current auxiliary variables.

    ``gram_x``/``gram_p`` are ``XᵀX``/``pᵀp``; the relu kind augments both with a ones column
    (the bias is the last row of the solution). Cross-covariances accumulate over chunks.
    """
    percdamp = jnp.float32(percdamp)
    chunks = {
        "x": lambda i: x[spans[i][0] : spans[i][1]],
        "y": lambda i: y[spans[i][0] : spans[i][1]],
        **{name: state[name].__getitem__ for name in ("s", "z", "p")},
    }

    def cross(left: str, right: str) -> jax.Array:
        return sum(_gram(chunks[left](i), chunks[right](i)) for i in range(len(spans)))

    if kind == "swiglu":
        return {
            "up_proj": _damped_solve(gram_x, cross("x", "z"), percdamp),
            "gate_proj": _damped_solve(gram_x, cross("x", "s"), percdamp),
            "down_proj": _damped_solve(gram_p, cross("p", "y"), percdamp),
        }, {}

    def sums(name: str) -> jax.Array:
        return sum(jnp.sum(chunks[name](i), axis=0) for i in range(len(spans)))

    count = x.shape[0]
    x_cross = jnp.concatenate([cross("x", "z"), sums("z")[None]], axis=0)
    p_cross = jnp.concatenate([cross("p", "y"), sums("y")[None]], axis=0)
    fc1 = _damped_solve(_augment(gram_x, sums("x"), count), x_cross, percdamp)
    fc2 = _damped_solve(_augment(gram_p, sums("p"), count), p_cross, percdamp)
    return {"fc1": fc1[:-1], "fc2": fc2[:-1]}, {"fc1": fc1[-1], "fc2": fc2[-1]}


def _validate(kernels, x, y, targets, kind, biases, options) -> dict[str, Any]:
    if kind not in _KEYS:
        raise ValueError(f"kind must be one of {sorted(_KEYS)}, got {kind!r}")
    keys = _KEYS[kind]
    if set(kernels) != set(keys):
        raise ValueError(f"a {kind} MLP needs kernels {keys}, got {sorted(kernels)}")
    if set(targets) != set(keys):
        raise ValueError(f"need one target per kernel {keys}, got {sorted(targets)}")
    for key in keys:
        check_target(targets[key], "sparsellm")
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"sparsellm has no options {unknown}; known: {sorted(DEFAULT_OPTIONS)}")
    opts = {**DEFAULT_OPTIONS, **options}
    for name in ("alpha", "beta", "gamma"):
        if not (math.isfinite(opts[name]) and opts[name] > 0):
            raise ValueError(
                f"alpha, beta and gamma must be positive and finite, got {name}={opts[name]!r}"
            )
    for name, low in (("iterations", 1), ("s_steps", 0), ("chunk_tokens", 1)):
        if not isinstance(opts[name], int) or opts[name] < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {opts[name]!r}")
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            "x and y must be (tokens, d) with equal tokens (at least one), "
            f"got {x.shape} and {y.shape}"
        )
    d, f = x.shape[1], kernels[keys[0]].shape[1]
    shapes = {k: tuple(kernels[k].shape) for k in keys}
    expected = {k: (d, f) for k in keys[:-1]} | {keys[-1]: (f, y.shape[1])}
    if shapes != expected:
        raise ValueError(
            f"kernel shapes {shapes} do not fit x {x.shape} and y {y.shape}; expected {expected} "
            "(Flax (in, out) layout)"
        )
    if kind == "relu":
        if biases is None or set(biases) != set(keys):
            raise ValueError("a relu (OPT) MLP needs biases for fc1 and fc2")
        bias_shapes = {k: tuple(biases[k].shape) for k in keys}
        if bias_shapes != {"fc1": (f,), "fc2": (y.shape[1],)}:
            raise ValueError(f"bias shapes {bias_shapes} do not fit fc1 {(d, f)} / fc2 {(f, d)}")
    return opts


def prune_mlp(
    kernels: Mapping[str, jax.Array],
    x: jax.Array,
    y: jax.Array,
    targets: Mapping[str, Target],
    *,
    kind: Literal["swiglu", "relu"],
    biases: Mapping[str, jax.Array] | None = None,
    **options: Any,
) -> MlpSolution:
    """Prunes one MLP jointly (SparseLLM).

    Args:
      kernels: Flax ``(in, out)`` kernels: ``gate_proj, up_proj, down_proj`` (swiglu) or
        ``fc1, fc2`` (relu).
      x: ``(T, d)`` MLP inputs (after the norm).
      y: ``(T, d)`` dense MLP outputs on ``x`` (fc2's bias included for relu).
      targets: one sparsity target per kernel (``Unstructured`` or ``NM``).
      kind: ``"swiglu"`` (LLaMA) or ``"relu"`` (OPT).
      biases: ``fc1``/``fc2`` biases for relu; ignored for swiglu.
      **options: see :data:`DEFAULT_OPTIONS`.

    Returns:
      :class:`MlpSolution` of the iterate with the lowest output error; its kernels satisfy their
      masks exactly.

    Raises:
      ValueError: unknown kind, option or key, mismatched shapes, bad option values, or non-finite
        ``x``/``y``.
    """
    opts = _validate(kernels, x, y, targets, kind, biases, options)
    keys = _KEYS[kind]
    w = {k: jnp.asarray(kernels[k], jnp.float32) for k in keys}
    b = {k: jnp.asarray(biases[k], jnp.float32) for k in keys} if kind == "relu" else {}
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    count = x.shape[0]
    coef = {n: jnp.float32(opts[n]) for n in ("alpha", "beta", "gamma")}
    spans = [
        (lo, min(lo + opts["chunk_tokens"], count)) for lo in range(0, count, opts["chunk_tokens"])
    ]

    gram_x = sum(_gram(x[lo:hi], x[lo:hi]) for lo, hi in spans)
    y_norm = float(sum(jnp.sum(y[lo:hi] ** 2) for lo, hi in spans))
    if not (math.isfinite(y_norm) and bool(jnp.all(jnp.isfinite(gram_x)))):
        raise ValueError("sparsellm: x or y holds NaN/inf values; check the captured activations")
    y_norm = y_norm or 1.0
    # The variables, chunk by chunk, so that replacing one frees its old value at once.
    state: dict[str, list[Any]] = {"s": [], "z": [], "p": []}
    for lo, hi in spans:
        for name, value in zip("szp", _dense_variables(kind, x[lo:hi], w, b), strict=True):
            state[name].append(value)

    best = None
    objective: list[float] = []
    output_error: list[float] = []
    for it in range(opts["iterations"]):
        gram_p = sum(_gram(pc, pc) for pc in state["p"])
        if it > 0:
            w, b = _refit(kind, x, y, spans, state, gram_x, gram_p, opts["percdamp"])
        pruned, keep = {}, {}
        for key in keys:
            pruned[key], keep[key] = sparsegpt.prune_kernel(
                w[key],
                # SparseGPT's H = (2/N) Σ xxᵀ of each kernel's inputs.
                (2.0 / count) * (gram_p if key == keys[-1] else gram_x),
                targets[key],
                blocksize=opts["blocksize"],
                percdamp=opts["percdamp"],
            )
        last = it == opts["iterations"] - 1
        system = None if last else _p_system(pruned[keys[-1]], coef["beta"], coef["gamma"])
        err = total = 0.0
        for i, (lo, hi) in enumerate(spans):
            *variables, chunk_err, terms = _chunk_pass(
                kind,
                x[lo:hi],
                y[lo:hi],
                *(state[name][i] for name in "szp"),
                pruned,
                b,
                system,
                coef,
                s_steps=opts["s_steps"],
                update=not last,
            )
            for name, value in zip("szp", variables, strict=True):
                state[name][i] = value
            err, total = err + chunk_err, total + terms
        err, total = float(err), float(total)
        output_error.append(err / y_norm)
        if best is None or err < best[0]:
            best = (err, pruned, keep, b)
        if not math.isfinite(total):
            warnings.warn(
                f"sparsellm: the auxiliary variables became non-finite in iteration {it}; "
                "returning the best iterate so far (raise percdamp or lower gamma)",
                RuntimeWarning,
                stacklevel=2,
            )
            break
        objective.append(total / y_norm)

    _, pruned, keep, b = best
    return MlpSolution(
        kernels={k: pruned[k].astype(kernels[k].dtype) for k in keys},
        masks=keep,
        biases={k: b[k].astype(biases[k].dtype) for k in b},
        objective=objective,
        output_error=output_error,
    )
