"""SparseLLM: prune a whole MLP jointly through auxiliary variables.

Bai et al., "SparseLLM: Towards Global Pruning for Pre-trained Language Models" (NeurIPS 2024,
arXiv 2402.17946). Instead of pruning each linear to reproduce its own dense output, the MLP's
intermediate activations become free variables tying the layers together. In token-row layout
(``X`` is ``(T, d)``, kernels are Flax ``(in, out)``) for a gated MLP with gate activation ``g``
(SiLU for LLaMA's SwiGLU, tanh-approximated GELU for Gemma; the model family names it):

    s = X W_gate,  z = X W_up,  p = g(s) ⊙ z,  Y = p W_down          (dense, on entry)

    min  α‖z − X W_up‖² + α‖s − X W_gate‖² + β‖Y − p W_down‖² + γ‖p − g(s) ⊙ z‖²

over sparse kernels and dense ``s, z, p``, by alternating closed-form steps. Each iteration:

1. **refit** (from the second iteration on) the dense kernels to the current variables by damped
   least squares (Cholesky of the Gram matrix ``G`` plus ``λI``,
   ``λ = refit_percdamp·mean(diag G)``): ``W_up = argmin ‖X W − z‖``, ``W_gate`` from ``s``,
   ``W_down = argmin ‖p W − Y‖``;
2. **prune** each with SparseGPT, ``W_up``/``W_gate`` with ``H = XᵀX``, ``W_down`` with ``H = pᵀp``;
   as SparseGPT minimises ‖X(W − Ŵ)‖ and the refit residual is orthogonal to the span of ``X``,
   this is the pruned least-squares fit to the variables;
3. **update** ``p ← (βYŴ_downᵀ + γa)(βŴ_downŴ_downᵀ + γI)⁻¹`` with ``a = g(s)⊙z``, computed as
   ``p = a + (Y − aŴ_down)(Ŵ_downᵀŴ_down + (γ/β)I)⁻¹Ŵ_downᵀ`` (push-through identity: a ``d × d``
   Cholesky factored once per iteration instead of an ``f × f`` system, and a correction that
   vanishes as ``a`` fits ``Y``); then ``z ← (α XŴ_up + γ g(s)⊙p) / (α + γ g(s)²)``
   elementwise, and ``s`` by ``s_steps`` elementwise Gauss-Newton steps on
   ``α(s − XŴ_gate)² + γ(p − g(s)z)²``, which use ``g'`` (a step is kept only where it lowers
   that cost, so the ``s`` update never raises the objective). The same pass over the tokens
   measures the true output error of the pruned kernels.

For an OPT/ReLU MLP (roles ``in``, ``out`` = OPT's ``fc1``, ``fc2``, with biases; ``z`` = the
``in`` pre-activation, ``p`` = the ``out`` projection's
input) the same scheme runs with biases refit alongside the kernels (ones-augmented least squares),
no ``s``, and the exact piecewise minimiser of ``α(z − u)² + γ(p − ReLU(z))²`` for ``z``.

The first iteration prunes the dense kernels, so iterate 0 *is* per-layer SparseGPT; the result is
the iterate with the lowest true output error ‖Y − MLP_pruned(X)‖²/‖Y‖² on the calibration tokens
(later iterates can be worse: the auxiliary objective is not the output error itself), so
SparseLLM never does worse than SparseGPT there. ``objective`` (normalised by ‖Y‖²) is reported
after each iteration's variable updates; the last iteration prunes without updating, and reports
the objective at its pruned kernels. Should the variables ever become non-finite the solver warns
and returns the best iterate so far (the lists are then shorter than ``iterations``).

Defaults (:data:`DEFAULT_OPTIONS`: α = 0.1, β = γ = 1, 6 iterations) come from sweeps on captured
SmolLM2-135M MLP inputs and random MLPs; the sweep and what it showed are in
``benchmarks/README.md`` ("SparseLLM defaults"). Only the ratios of α, β, γ matter.

The refits' ridge ``refit_percdamp`` (default 0.01, a fraction of the Gram matrix's mean
diagonal) biases each refit kernel, so step 2's "pruned least-squares fit" holds only as it goes
to zero (the original code refits by undamped pseudo-inverse). Where one channel holds most of
the trace (SmolLM2's block 11: one hidden unit, 89% of pᵀp's), 0.01 of the mean diagonal is a
large ridge for every other channel: on SmolLM2-135M, 1e-4 lowers every measured MLP's error and
70% Hamlet perplexity from 97.20 to 87.90, while on the tests' random MLPs 0.01 does better. The
default stays 0.01 until the other rows are measured (``benchmarks/README.md``, "The refits'
ridge"); pass ``refit_percdamp=1e-4`` for models with massive activations.

The MLP's linears are named by **role**, not by a model's parameter names: ``gate``, ``up``,
``down`` (gated) and ``in``, ``out`` (ReLU); each model family maps its linears to these roles and
names the gate activation (:data:`~jaxprune.methods.sparsellm_steps.ACTIVATIONS`, with the
derivatives the Gauss-Newton steps use).

Memory: the variables ``z, p`` (and ``s`` for gated MLPs) are kept as float32 chunks of
``chunk_tokens`` rows, each replaced in turn, and every other token-sized quantity is made one chunk
at a time (Gram and cross-covariance sums accumulate over chunks). With ``c`` = ``chunk_tokens``
the solver holds about

    4 B · (2·T·d  +  k·T·f  +  d² + 6·f²  +  9·d·f  +  c·(12·f + 4·d))      (k = 3 gated, 2 ReLU)

(``X``, ``Y`` as float32; the variables; the Gram matrices and SparseGPT's ``f × f`` work; dense,
pruned and best kernels; one chunk's temporaries). For a LLaMA-7B MLP (d = 4096, f = 11008) with
128 × 2048 tokens that is 8.6 + 34.6 + 3.0 + 1.6 + 4.9 ≈ 53 GB, within one 80 GB device (the
engine's own captured tensors come on top). Measured on CPU (d = 128, f = 1024, T = 131072): the
process grew by 1.69 GiB during the solve against 1.92 GiB predicted by the formula without X, Y.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp

import jaxprune.methods.sparsegpt as sparsegpt
from jaxprune.core.sparsity import Target
from jaxprune.methods.base import (
    JointSolution,
    JointUnit,
    Method,
    check_target,
    register_method,
)
from jaxprune.methods.sparsellm_steps import (
    ACTIVATIONS,
    ROLES,
    chunk_pass,
    dense_variables,
    gram,
    p_system,
    refit,
)
from jaxprune.methods.statistics import HESSIAN

DEFAULT_OPTIONS: dict[str, Any] = {
    # Weights of the three coupling terms of the objective; only their ratios matter. A small
    # alpha lets z and s follow the p that fits Y (see the module docstring for the experiment).
    "alpha": 0.1,
    "beta": 1.0,
    "gamma": 1.0,
    # Outer iterations (iterate 0 is plain SparseGPT), each one SparseGPT pass over the kernels.
    "iterations": 6,
    # Gauss-Newton steps of the gate pre-activation s per iteration (gated MLPs only).
    "s_steps": 3,
    # SparseGPT's options.
    "percdamp": 0.01,
    "blocksize": 128,
    # Ridge of the least-squares refits, as a fraction of the Gram matrix's mean diagonal (the
    # scale of SparseGPT's percdamp). The refits' targets are the variables themselves, so a
    # ridge biases every refit kernel toward zero; see the module docstring.
    "refit_percdamp": 0.01,
    # Token rows per chunk of the variable updates (bounds the temporaries, see the docstring).
    "chunk_tokens": 8192,
}


# The result type of :func:`prune_mlp` (the joint-solver protocol's solution).
MlpSolution = JointSolution


def _validate(kernels, x, y, targets, kind, activation, biases, options) -> dict[str, Any]:
    if kind not in ROLES:
        raise ValueError(f"kind must be one of {sorted(ROLES)}, got {kind!r}")
    allowed = sorted(ACTIVATIONS) if kind == "gated" else ["relu"]
    if activation not in allowed:
        raise ValueError(f"a {kind} MLP's activation must be one of {allowed}, got {activation!r}")
    keys = ROLES[kind]
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
    for name in ("alpha", "beta", "gamma", "refit_percdamp"):
        if not (math.isfinite(opts[name]) and opts[name] > 0):
            raise ValueError(
                "alpha, beta, gamma and refit_percdamp must be positive and finite, "
                f"got {name}={opts[name]!r}"
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
            raise ValueError("a relu (OPT) MLP needs biases for its in and out roles")
        bias_shapes = {k: tuple(biases[k].shape) for k in keys}
        if bias_shapes != {"in": (f,), "out": (y.shape[1],)}:
            raise ValueError(f"bias shapes {bias_shapes} do not fit in {(d, f)} / out {(f, d)}")
    return opts


def prune_mlp(
    kernels: Mapping[str, jax.Array],
    x: jax.Array,
    y: jax.Array,
    targets: Mapping[str, Target],
    *,
    kind: Literal["gated", "relu"],
    activation: str,
    biases: Mapping[str, jax.Array] | None = None,
    **options: Any,
) -> MlpSolution:
    """Prunes one MLP jointly (SparseLLM).

    Args:
      kernels: Flax ``(in, out)`` kernels by role: ``gate, up, down`` (gated) or ``in, out``
        (relu).
      x: ``(T, d)`` MLP inputs (after the norm).
      y: ``(T, d)`` dense MLP outputs on ``x`` (the output bias included for relu).
      targets: one sparsity target per kernel (``Unstructured`` or ``NM``).
      kind: ``"gated"`` (LLaMA, Gemma) or ``"relu"`` (OPT).
      activation: the gate activation of a gated MLP (a key of
        :data:`~jaxprune.methods.sparsellm_steps.ACTIVATIONS`: ``"silu"``, ``"gelu_tanh"``);
        ``"relu"`` for the relu kind.
      biases: ``in``/``out`` biases for relu; ignored for gated.
      **options: see :data:`DEFAULT_OPTIONS`.

    Returns:
      :class:`MlpSolution` of the iterate with the lowest output error; its kernels satisfy their
      masks exactly.

    Raises:
      ValueError: unknown kind, activation, option or key, mismatched shapes, bad option values, or
        non-finite ``x``/``y``.
    """
    opts = _validate(kernels, x, y, targets, kind, activation, biases, options)
    keys = ROLES[kind]
    w = {k: jnp.asarray(kernels[k], jnp.float32) for k in keys}
    b = {k: jnp.asarray(biases[k], jnp.float32) for k in keys} if kind == "relu" else {}
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    count = x.shape[0]
    coef = {n: jnp.float32(opts[n]) for n in ("alpha", "beta", "gamma")}
    spans = [
        (lo, min(lo + opts["chunk_tokens"], count)) for lo in range(0, count, opts["chunk_tokens"])
    ]

    gram_x = sum(gram(x[lo:hi], x[lo:hi]) for lo, hi in spans)
    y_norm = float(sum(jnp.sum(y[lo:hi] ** 2) for lo, hi in spans))
    if not (math.isfinite(y_norm) and bool(jnp.all(jnp.isfinite(gram_x)))):
        raise ValueError("sparsellm: x or y holds NaN/inf values; check the captured activations")
    y_norm = y_norm or 1.0
    # The variables, chunk by chunk, so that replacing one frees its old value at once.
    state: dict[str, list[Any]] = {"s": [], "z": [], "p": []}
    for lo, hi in spans:
        for name, value in zip(
            "szp", dense_variables(kind, activation, x[lo:hi], w, b), strict=True
        ):
            state[name].append(value)

    best = None
    objective: list[float] = []
    output_error: list[float] = []
    for it in range(opts["iterations"]):
        gram_p = sum(gram(pc, pc) for pc in state["p"])
        if it > 0:
            w, b = refit(kind, x, y, spans, state, gram_x, gram_p, opts["refit_percdamp"])
        # SparseGPT's H = (2/N) Σ xxᵀ of each kernel's inputs; the kernels reading X share it and
        # are swept together.
        solver = {"blocksize": opts["blocksize"], "percdamp": opts["percdamp"]}
        inputs_side, last_key = keys[:-1], keys[-1]
        solved = sparsegpt.prune_kernels(
            [w[k] for k in inputs_side],
            (2.0 / count) * gram_x,
            [targets[k] for k in inputs_side],
            **solver,
        )
        solved.append(
            sparsegpt.prune_kernel(w[last_key], (2.0 / count) * gram_p, targets[last_key], **solver)
        )
        pruned = {k: new for k, (new, _) in zip(keys, solved, strict=True)}
        keep = {k: mask for k, (_, mask) in zip(keys, solved, strict=True)}
        last = it == opts["iterations"] - 1
        system = None if last else p_system(pruned[keys[-1]], coef["beta"], coef["gamma"])
        err = total = 0.0
        for i, (lo, hi) in enumerate(spans):
            *variables, chunk_err, terms = chunk_pass(
                kind,
                activation,
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
                "returning the best iterate so far "
                "(raise refit_percdamp or percdamp, or lower gamma)",
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


def solve_joint(unit: JointUnit, targets: Mapping[str, Target], **options: Any) -> JointSolution:
    """The joint-solver interface: :func:`prune_mlp` on a :class:`~jaxprune.methods.JointUnit`."""
    return prune_mlp(
        unit.kernels,
        unit.x,
        unit.y,
        targets,
        kind=unit.kind,
        activation=unit.activation,
        biases=unit.biases or None,
        **options,
    )


# SparseLLM prunes attention per kernel with SparseGPT and each MLP jointly.
METHOD = register_method(
    Method(
        "sparsellm",
        sparsegpt.solve,
        statistics=HESSIAN,
        options=sparsegpt.OPTIONS,
        solve_sharded=sparsegpt.solve_sharded,
        solve_group=sparsegpt.solve_group,
        joint=solve_joint,
        joint_options=DEFAULT_OPTIONS,
    )
)
