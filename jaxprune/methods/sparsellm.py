"""SparseLLM: prune a whole MLP jointly through auxiliary variables.

Bai et al., "SparseLLM: Towards Global Pruning for Pre-trained Language Models" (NeurIPS 2024,
arXiv 2402.17946). Instead of pruning each linear to reproduce its own dense output, the MLP's
intermediate activations become free variables tying the layers together. In token-row layout
(``X`` is ``(T, d)``, kernels are Flax ``(in, out)``) for a SwiGLU MLP:

    s = X W_gate,  z = X W_up,  p = SiLU(s) ⊙ z,  Y = p W_down          (dense, on entry)

    min  α‖z − X W_up‖² + α‖s − X W_gate‖² + β‖Y − p W_down‖² + γ‖p − SiLU(s) ⊙ z‖²

over sparse kernels and dense ``s, z, p``, by alternating closed-form steps. Each iteration:

1. **refit** (from the second iteration on) the dense kernels to the current variables by damped
   least squares: ``W_up = argmin ‖X W − z‖``, ``W_gate`` from ``s``, ``W_down = argmin ‖p W − Y‖``;
2. **prune** each with SparseGPT, ``W_up``/``W_gate`` with ``H = XᵀX``, ``W_down`` with ``H = pᵀp``;
   as SparseGPT minimises ‖X(W − Ŵ)‖ and the refit residual is orthogonal to that, this is the
   pruned least-squares fit to the variables;
3. **update** ``p ← (βYŴ_downᵀ + γ SiLU(s)⊙z)(βŴ_downŴ_downᵀ + γI)⁻¹`` (solved through the
   ``d × d`` Woodbury form, since ``Ŵ_downŴ_downᵀ`` has rank ≤ d), ``z ← (α XŴ_up + γ SiLU(s)⊙p)
   / (α + γ SiLU(s)²)`` elementwise, and ``s`` by ``s_steps`` elementwise Gauss-Newton steps on
   ``α(s − XŴ_gate)² + γ(p − SiLU(s)z)²``.

For an OPT/ReLU MLP (``fc1``, ``fc2`` with biases; ``z`` = fc1's pre-activation, ``p`` = fc2's
input) the same scheme runs with biases refit alongside the kernels (ones-augmented least squares),
no ``s``, and the exact piecewise minimiser of ``α(z − u)² + γ(p − ReLU(z))²`` for ``z``.

The first iteration prunes the dense kernels, so iterate 0 *is* SparseGPT; the result is the
iterate with the lowest true output error ‖Y − MLP_pruned(X)‖²/‖Y‖² on the calibration tokens, so
SparseLLM never does worse than SparseGPT there. The objective is reported per iteration.

Memory: everything token-sized is processed in chunks of ``chunk_tokens`` rows; the state is
``X, Y`` (``2·T·d``) and ``z, p`` (plus ``s`` for SwiGLU) (``3·T·f``) float32 values, plus
``O(d·f + f²)`` for Gram matrices and kernels. For a LLaMA-7B MLP (d = 4096, f = 11008) with
128 × 2048 tokens that is (2·4096 + 3·11008)·262144·4 B ≈ 43 GB: it fits one 80 GB device; for more
tokens keep ``X``/``Y`` on the host (the engine's arrays are ordinary ``jax.Array`` s and may be
placed there).
"""

from __future__ import annotations

import functools
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
    # Weights of the three coupling terms; only their ratios matter. Equal weights are the
    # reference's choice.
    "alpha": 1.0,
    "beta": 1.0,
    "gamma": 1.0,
    # Outer iterations (iterate 0 is plain SparseGPT).
    "iterations": 4,
    # Gauss-Newton steps of the gate pre-activation s per iteration (SwiGLU only).
    "s_steps": 3,
    # SparseGPT's options, also used for the refits' damping.
    "percdamp": 0.01,
    "blocksize": 128,
    # Token rows per chunk of the auxiliary updates.
    "chunk_tokens": 8192,
}

_KEYS = {"swiglu": ("gate_proj", "up_proj", "down_proj"), "relu": ("fc1", "fc2")}


class MlpSolution(NamedTuple):
    """The pruned MLP and how the iterations went."""

    kernels: dict[str, jax.Array]
    masks: dict[str, jax.Array]
    biases: dict[str, jax.Array]
    objective: list[float]
    output_error: list[float]


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size, total)) for lo in range(0, total, size)]


def _damped_solve(gram: jax.Array, rhs: jax.Array, percdamp: float) -> jax.Array:
    """``(G + λI)⁻¹ rhs`` by Cholesky, λ = percdamp·mean(diag G) (at least a tiny floor)."""
    n = gram.shape[0]
    damp = percdamp * jnp.mean(jnp.diagonal(gram)) + 1e-8
    lower = jnp.linalg.cholesky(gram + damp * jnp.eye(n, dtype=gram.dtype))
    return jax.scipy.linalg.cho_solve((lower, True), rhs)


def _with_ones(x: jax.Array) -> jax.Array:
    return jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)


@jax.jit
def _gram(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a.T, b, precision=_HI)


@functools.partial(jax.jit, static_argnames=("kind",))
def _forward(kind: str, x, kernels, biases):
    """The MLP on rows ``x`` (float32)."""
    if kind == "swiglu":
        s = jnp.matmul(x, kernels["gate_proj"], precision=_HI)
        z = jnp.matmul(x, kernels["up_proj"], precision=_HI)
        return jnp.matmul(jax.nn.silu(s) * z, kernels["down_proj"], precision=_HI)
    z = jnp.matmul(x, kernels["fc1"], precision=_HI) + biases["fc1"]
    return jnp.matmul(jax.nn.relu(z), kernels["fc2"], precision=_HI) + biases["fc2"]


@jax.jit
def _update_p(y, a, w_down, y_bias, beta, gamma):
    """Rows of ``argmin_p β‖Y − p W‖² + γ‖p − a‖²`` via Woodbury (a ``d × d`` solve)."""
    r = beta * jnp.matmul(y - y_bias, w_down.T, precision=_HI) + gamma * a  # (T, f)
    d = w_down.shape[1]
    inner = (gamma / beta) * jnp.eye(d, dtype=jnp.float32) + jnp.matmul(
        w_down.T, w_down, precision=_HI
    )
    corr = jnp.linalg.solve(inner, jnp.matmul(r, w_down, precision=_HI).T).T  # (T, d)
    return (r - jnp.matmul(corr, w_down.T, precision=_HI)) / gamma


@functools.partial(jax.jit, static_argnames=("s_steps",))
def _update_swiglu(x, y, s, z, kernels, alpha, beta, gamma, s_steps):
    """One round of p, z, s updates on a chunk; returns them and the chunk's objective terms."""
    w_gate, w_up, w_down = kernels["gate_proj"], kernels["up_proj"], kernels["down_proj"]
    p = _update_p(y, jax.nn.silu(s) * z, w_down, 0.0, beta, gamma)
    u_up = jnp.matmul(x, w_up, precision=_HI)
    act = jax.nn.silu(s)
    z = (alpha * u_up + gamma * act * p) / (alpha + gamma * act * act)
    u_gate = jnp.matmul(x, w_gate, precision=_HI)

    def gauss_newton(_, s):
        sig = jax.nn.sigmoid(s)
        act = s * sig
        dact = sig * (1.0 + s * (1.0 - sig))
        resid = act * z - p
        grad = alpha * (s - u_gate) + gamma * resid * z * dact
        curv = alpha + gamma * (z * dact) ** 2
        return s - grad / curv

    s = lax.fori_loop(0, s_steps, gauss_newton, s)
    y_hat = jnp.matmul(p, w_down, precision=_HI)
    terms = (
        alpha * jnp.sum((z - u_up) ** 2)
        + alpha * jnp.sum((s - u_gate) ** 2)
        + beta * jnp.sum((y - y_hat) ** 2)
        + gamma * jnp.sum((p - jax.nn.silu(s) * z) ** 2)
    )
    return s, z, p, terms


@jax.jit
def _update_relu(x, y, z, kernels, biases, alpha, beta, gamma):
    """p and z updates for a ReLU MLP on a chunk, and the chunk's objective."""
    w1, w2, b1, b2 = kernels["fc1"], kernels["fc2"], biases["fc1"], biases["fc2"]
    p = _update_p(y, jax.nn.relu(z), w2, b2, beta, gamma)
    u = jnp.matmul(x, w1, precision=_HI) + b1
    # argmin_z α(z − u)² + γ(p − ReLU(z))²: the better of the two branches' minimisers.
    z_neg = jnp.minimum(u, 0.0)
    z_pos = jnp.maximum((alpha * u + gamma * p) / (alpha + gamma), 0.0)

    def cost(v):
        return alpha * (v - u) ** 2 + gamma * (p - jax.nn.relu(v)) ** 2

    z = jnp.where(cost(z_neg) <= cost(z_pos), z_neg, z_pos)
    y_hat = jnp.matmul(p, w2, precision=_HI) + b2
    terms = (
        alpha * jnp.sum((z - u) ** 2)
        + beta * jnp.sum((y - y_hat) ** 2)
        + gamma * jnp.sum((p - jax.nn.relu(z)) ** 2)
    )
    return z, p, terms


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
    if min(opts["alpha"], opts["beta"], opts["gamma"]) <= 0:
        raise ValueError("alpha, beta and gamma must be positive")
    if opts["iterations"] < 1 or opts["s_steps"] < 0 or opts["chunk_tokens"] < 1:
        raise ValueError("iterations and chunk_tokens must be >= 1 and s_steps >= 0")
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must be (tokens, d) with equal tokens, got {x.shape}, {y.shape}")
    first, last = kernels[keys[0]], kernels[keys[-1]]
    if first.shape[0] != x.shape[1] or last.shape[1] != y.shape[1]:
        raise ValueError(
            f"kernel shapes {[kernels[k].shape for k in keys]} do not fit x {x.shape} / y {y.shape}"
        )
    if kind == "relu" and (biases is None or set(biases) != set(keys)):
        raise ValueError("a relu (OPT) MLP needs biases for fc1 and fc2")
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
      targets: one sparsity target per kernel.
      kind: ``"swiglu"`` (LLaMA) or ``"relu"`` (OPT).
      biases: ``fc1``/``fc2`` biases for relu; ignored for swiglu.
      **options: see :data:`DEFAULT_OPTIONS`.

    Returns:
      :class:`MlpSolution` whose kernels satisfy their masks exactly.
    """
    opts = _validate(kernels, x, y, targets, kind, biases, options)
    keys = _KEYS[kind]
    dtypes = {k: kernels[k].dtype for k in keys}
    w = {k: jnp.asarray(kernels[k], jnp.float32) for k in keys}
    b = {k: jnp.asarray(biases[k], jnp.float32) for k in keys} if kind == "relu" else {}
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    alpha, beta, gamma = (jnp.float32(opts[n]) for n in ("alpha", "beta", "gamma"))
    percdamp, blocksize = opts["percdamp"], opts["blocksize"]
    spans = _chunks(x.shape[0], opts["chunk_tokens"])
    y_norm = float(sum(jnp.sum(y[lo:hi] ** 2) for lo, hi in spans)) or 1.0

    gram_x = sum(_gram(x[lo:hi], x[lo:hi]) for lo, hi in spans)
    # Auxiliary variables from the dense MLP.
    first = "up_proj" if kind == "swiglu" else "fc1"
    z = jnp.concatenate(
        [jnp.matmul(x[lo:hi], w[first], precision=_HI) + b.get("fc1", 0.0) for lo, hi in spans]
    )
    s = None
    if kind == "swiglu":
        s = jnp.concatenate(
            [jnp.matmul(x[lo:hi], w["gate_proj"], precision=_HI) for lo, hi in spans]
        )
        p = jax.nn.silu(s) * z
    else:
        p = jax.nn.relu(z)

    best = None
    objective, output_error = [], []
    for it in range(opts["iterations"]):
        gram_p = sum(_gram(p[lo:hi], p[lo:hi]) for lo, hi in spans)
        if it > 0:
            w, b = _refit(kind, x, y, s, z, p, spans, gram_x, gram_p, percdamp)
        pruned, keep = {}, {}
        for key in keys:
            hessian = gram_p if key == keys[-1] else gram_x
            pruned[key], keep[key] = sparsegpt.prune_kernel(
                w[key],
                2.0 * hessian / x.shape[0],
                targets[key],
                blocksize=blocksize,
                percdamp=percdamp,
            )
        err = (
            sum(
                float(jnp.sum((y[lo:hi] - _forward(kind, x[lo:hi], pruned, b)) ** 2))
                for lo, hi in spans
            )
            / y_norm
        )
        output_error.append(err)
        if best is None or err < best[0]:
            best = (err, dict(pruned), dict(keep), dict(b))
        if it == opts["iterations"] - 1:
            objective.append(_objective_only(kind, x, y, s, z, p, pruned, b, spans, opts) / y_norm)
            break
        total = 0.0
        new_s, new_z, new_p = [], [], []
        for lo, hi in spans:
            if kind == "swiglu":
                sc, zc, pc, terms = _update_swiglu(
                    x[lo:hi],
                    y[lo:hi],
                    s[lo:hi],
                    z[lo:hi],
                    pruned,
                    alpha,
                    beta,
                    gamma,
                    opts["s_steps"],
                )
                new_s.append(sc)
            else:
                zc, pc, terms = _update_relu(
                    x[lo:hi], y[lo:hi], z[lo:hi], pruned, b, alpha, beta, gamma
                )
            new_z.append(zc)
            new_p.append(pc)
            total += float(terms)
        z, p = jnp.concatenate(new_z), jnp.concatenate(new_p)
        if kind == "swiglu":
            s = jnp.concatenate(new_s)
        objective.append(total / y_norm)
        if not all(jnp.isfinite(v).all() for v in (z, p)):
            raise FloatingPointError(
                "sparsellm: auxiliary variables became non-finite; raise percdamp or lower gamma"
            )

    _, pruned, keep, b = best
    return MlpSolution(
        kernels={k: pruned[k].astype(dtypes[k]) for k in keys},
        masks=keep,
        biases={k: b[k].astype(biases[k].dtype) for k in b} if kind == "relu" else {},
        objective=objective,
        output_error=output_error,
    )


def _refit(kind, x, y, s, z, p, spans, gram_x, gram_p, percdamp):
    """Dense least-squares kernels (and biases) for the current auxiliary variables.

    ``gram_x``/``gram_p`` are ``XᵀX``/``pᵀp``; the relu kind augments both with a ones column
    (the bias is the last row of the solution).
    """
    if kind == "swiglu":
        cross_z = sum(_gram(x[lo:hi], z[lo:hi]) for lo, hi in spans)
        cross_s = sum(_gram(x[lo:hi], s[lo:hi]) for lo, hi in spans)
        cross_y = sum(_gram(p[lo:hi], y[lo:hi]) for lo, hi in spans)
        return {
            "up_proj": _damped_solve(gram_x, cross_z, percdamp),
            "gate_proj": _damped_solve(gram_x, cross_s, percdamp),
            "down_proj": _damped_solve(gram_p, cross_y, percdamp),
        }, {}
    count = x.shape[0]
    cross_z = sum(_gram(_with_ones(x[lo:hi]), z[lo:hi]) for lo, hi in spans)
    cross_y = sum(_gram(_with_ones(p[lo:hi]), y[lo:hi]) for lo, hi in spans)
    gram_x1 = _augment(gram_x, sum(jnp.sum(x[lo:hi], axis=0) for lo, hi in spans), count)
    gram_p1 = _augment(gram_p, sum(jnp.sum(p[lo:hi], axis=0) for lo, hi in spans), count)
    fc1 = _damped_solve(gram_x1, cross_z, percdamp)
    fc2 = _damped_solve(gram_p1, cross_y, percdamp)
    return {"fc1": fc1[:-1], "fc2": fc2[:-1]}, {"fc1": fc1[-1], "fc2": fc2[-1]}


def _augment(gram: jax.Array, col_sums: jax.Array, count: int) -> jax.Array:
    """The Gram matrix of ``[A, 1]`` from that of ``A``, its column sums and its row count."""
    top = jnp.concatenate([gram, col_sums[:, None]], axis=1)
    bottom = jnp.concatenate([col_sums, jnp.asarray([float(count)], gram.dtype)])[None, :]
    return jnp.concatenate([top, bottom], axis=0)


def _objective_only(kind, x, y, s, z, p, pruned, b, spans, opts) -> float:
    """The objective at the current variables and pruned kernels, without updating them."""
    alpha, beta, gamma = opts["alpha"], opts["beta"], opts["gamma"]
    total = 0.0
    for lo, hi in spans:
        xc, yc, zc, pc = x[lo:hi], y[lo:hi], z[lo:hi], p[lo:hi]
        if kind == "swiglu":
            sc = s[lo:hi]
            total += float(
                alpha * jnp.sum((zc - xc @ pruned["up_proj"]) ** 2)
                + alpha * jnp.sum((sc - xc @ pruned["gate_proj"]) ** 2)
                + beta * jnp.sum((yc - pc @ pruned["down_proj"]) ** 2)
                + gamma * jnp.sum((pc - jax.nn.silu(sc) * zc) ** 2)
            )
        else:
            total += float(
                alpha * jnp.sum((zc - xc @ pruned["fc1"] - b["fc1"]) ** 2)
                + beta * jnp.sum((yc - pc @ pruned["fc2"] - b["fc2"]) ** 2)
                + gamma * jnp.sum((pc - jax.nn.relu(zc)) ** 2)
            )
    return total
