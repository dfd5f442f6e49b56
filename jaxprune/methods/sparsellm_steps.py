"""SparseLLM's steps: the closed-form updates of its auxiliary variables and the refits.

Token-row layout: ``x`` is ``(T, d)``, kernels are Flax ``(in, out)``; the variables ``s`` (gate
pre-activation, gated MLPs only), ``z`` (up / ``in`` pre-activation) and ``p`` (the output
projection's input) are float32 chunks of rows. See :mod:`jaxprune.methods.sparsellm` for the
objective and the order of the steps; every function here is one step of it. ``act`` names the
activation (a static argument): a key of :data:`ACTIVATIONS` for gated MLPs, ``"relu"`` for the
relu kind.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxprune.core.deprecation import renamed
from jaxprune.methods.linalg import cho_solve, cholesky

# The roles of each MLP kind, its output projection last.
ROLES = {"gated": ("gate", "up", "down"), "relu": ("in", "out")}


class Activation(NamedTuple):
    """A gate activation ``g`` and its derivative ``g'`` (the gate's Gauss-Newton steps)."""

    fn: Callable[[jax.Array], jax.Array]
    derivative: Callable[[jax.Array], jax.Array]


def _silu_derivative(s: jax.Array) -> jax.Array:
    sig = jax.nn.sigmoid(s)
    return sig * (1.0 + s * (1.0 - sig))


_GELU_C, _GELU_A = math.sqrt(2.0 / math.pi), 0.044715


def _gelu_tanh(s: jax.Array) -> jax.Array:
    return jax.nn.gelu(s, approximate=True)


def _gelu_tanh_derivative(s: jax.Array) -> jax.Array:
    # g(s) = s/2 (1 + tanh u), u = c (s + a s³):  g'(s) = (1 + t)/2 + s/2 (1 − t²) c (1 + 3 a s²).
    t = jnp.tanh(_GELU_C * (s + _GELU_A * s**3))
    return 0.5 * (1.0 + t) + 0.5 * s * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_A * s * s)


# Gate activations by the names model families declare (``MlpSpec.activation``).
ACTIVATIONS = {
    "silu": Activation(jax.nn.silu, _silu_derivative),
    "gelu_tanh": Activation(_gelu_tanh, _gelu_tanh_derivative),
}

_HI = lax.Precision.HIGHEST


def matmul_highest(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` at full float32 precision (no TF32/bf16 passes on accelerators)."""
    return jnp.matmul(a, b, precision=_HI)


@jax.jit
def gram(a: jax.Array, b: jax.Array) -> jax.Array:
    return matmul_highest(a.T, b)


@jax.jit
def damped_solve(gram: jax.Array, rhs: jax.Array, percdamp: jax.Array) -> jax.Array:
    """``(G + λI)⁻¹ rhs`` by Cholesky, λ = percdamp·mean(diag G) plus a floor for G = 0."""
    damp = percdamp * jnp.mean(jnp.diagonal(gram)) + 1e-8
    lower = cholesky(gram + damp * jnp.eye(gram.shape[0], dtype=gram.dtype))
    return cho_solve(lower, rhs)


def pre_activations(kind: str, x: jax.Array, kernels, biases):
    """``(s, z)``: gate and up (gated) or ``(None, in)`` (relu) pre-activations of ``x``."""
    if kind == "gated":
        return matmul_highest(x, kernels["gate"]), matmul_highest(x, kernels["up"])
    return None, matmul_highest(x, kernels["in"]) + biases["in"]


def activation(kind: str, act: str, s, z):
    """The output projection's input from the pre-activations."""
    return ACTIVATIONS[act].fn(s) * z if kind == "gated" else jax.nn.relu(z)


@functools.partial(jax.jit, static_argnames=("kind", "act"))
def dense_variables(kind: str, act: str, x: jax.Array, kernels, biases):
    """``(s, z, p)`` of the dense MLP on a chunk (``s`` is ``None`` for relu)."""
    s, z = pre_activations(kind, x, kernels, biases)
    return s, z, activation(kind, act, s, z)


def output_projection(kind: str, p: jax.Array, kernels, biases) -> jax.Array:
    """The MLP's output: ``p`` through its last linear (``down`` or ``out``), with its bias."""
    last = ROLES[kind][-1]
    return matmul_highest(p, kernels[last]) + biases.get(last, 0.0)


def terms(kind, act, y, s, z, p, u_s, u_z, y_hat, alpha, beta, gamma) -> jax.Array:
    """The objective on a chunk, given ``u_s, u_z`` = the pruned pre-activations of ``x`` and
    ``y_hat`` = ``p`` through the pruned last layer."""
    total = alpha * jnp.sum((z - u_z) ** 2) + beta * jnp.sum((y - y_hat) ** 2)
    total += gamma * jnp.sum((p - activation(kind, act, s, z)) ** 2)
    if kind == "gated":
        total += alpha * jnp.sum((s - u_s) ** 2)
    return total


@jax.jit
def p_system(w_down: jax.Array, beta: jax.Array, gamma: jax.Array):
    """``WᵀW`` and the lower Cholesky factor of ``WᵀW + (γ/β)I`` (``d × d``, positive definite)."""
    wtw = matmul_highest(w_down.T, w_down)
    eye = jnp.eye(wtw.shape[0], dtype=wtw.dtype)
    return wtw, cholesky(wtw + (gamma / beta) * eye)


@functools.partial(jax.jit, static_argnames=("kind", "act", "s_steps", "update"))
def chunk_pass(kind, act, x, y, s, z, p, kernels, biases, system, coef, *, s_steps, update):
    """One chunk: the pruned MLP's squared output error and, with ``update``, the new ``(s, z, p)``.

    Returns ``(s, z, p, squared error, objective)``; without ``update`` the variables are returned
    unchanged and the objective is taken at them.
    """
    alpha, beta, gamma = coef["alpha"], coef["beta"], coef["gamma"]
    u_s, u_z = pre_activations(kind, x, kernels, biases)
    error = jnp.sum(
        (y - output_projection(kind, activation(kind, act, u_s, u_z), kernels, biases)) ** 2
    )
    if not update:
        y_hat = output_projection(kind, p, kernels, biases)
        return s, z, p, error, terms(kind, act, y, s, z, p, u_s, u_z, y_hat, alpha, beta, gamma)

    # p = argmin β‖Y − pW − b‖² + γ‖p − a‖², a = act(s, z). Writing p = a + δ with the residual
    # e = Y − aW − b, the push-through identity gives δ = e (WᵀW + (γ/β)I)⁻¹ Wᵀ: a d × d solve
    # (not f × f), and a correction that is small when a already fits Y (no cancellation).
    wtw, factor = system
    last = ROLES[kind][-1]
    a = activation(kind, act, s, z)
    a_out = output_projection(kind, a, kernels, biases)
    c = cho_solve(factor, (y - a_out).T).T
    p = a + matmul_highest(c, kernels[last].T)
    y_hat = a_out + matmul_highest(c, wtw)  # = p W + b, without another (T, f) × (f, d) product
    if kind == "relu":
        # argmin_z α(z − u)² + γ(p − ReLU(z))²: each branch's minimiser, then the better one.
        z_neg = jnp.minimum(u_z, 0.0)
        z_pos = jnp.maximum((alpha * u_z + gamma * p) / (alpha + gamma), 0.0)

        def z_cost(v):
            return alpha * (v - u_z) ** 2 + gamma * (p - jax.nn.relu(v)) ** 2

        z = jnp.where(z_cost(z_neg) <= z_cost(z_pos), z_neg, z_pos)
    else:
        g = ACTIVATIONS[act]
        gate = g.fn(s)
        z = (alpha * u_z + gamma * gate * p) / (alpha + gamma * gate * gate)

        def s_cost(v):
            return alpha * (v - u_s) ** 2 + gamma * (p - g.fn(v) * z) ** 2

        def gauss_newton(_, s):
            # Residual r = g(s) z − p has Jacobian z g'(s): gradient and Gauss-Newton curvature.
            dact = g.derivative(s)
            grad = alpha * (s - u_s) + gamma * (g.fn(s) * z - p) * z * dact
            step = s - grad / (alpha + gamma * (z * dact) ** 2)
            # The cost is not convex in s; a Gauss-Newton step that overshoots is not taken.
            return jnp.where(s_cost(step) <= s_cost(s), step, s)

        s = lax.fori_loop(0, s_steps, gauss_newton, s)
    return s, z, p, error, terms(kind, act, y, s, z, p, u_s, u_z, y_hat, alpha, beta, gamma)


def augment(gram: jax.Array, col_sums: jax.Array, count: int) -> jax.Array:
    """The Gram matrix of ``[A, 1]`` from that of ``A``, its column sums and its row count."""
    top = jnp.concatenate([gram, col_sums[:, None]], axis=1)
    bottom = jnp.concatenate([col_sums, jnp.asarray([float(count)], gram.dtype)])[None, :]
    return jnp.concatenate([top, bottom], axis=0)


def refit(kind, x, y, spans, state, gram_x, gram_p, percdamp):
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
        return sum(gram(chunks[left](i), chunks[right](i)) for i in range(len(spans)))

    if kind == "gated":
        return {
            "up": damped_solve(gram_x, cross("x", "z"), percdamp),
            "gate": damped_solve(gram_x, cross("x", "s"), percdamp),
            "down": damped_solve(gram_p, cross("p", "y"), percdamp),
        }, {}

    def sums(name: str) -> jax.Array:
        return sum(jnp.sum(chunks[name](i), axis=0) for i in range(len(spans)))

    count = x.shape[0]
    x_cross = jnp.concatenate([cross("x", "z"), sums("z")[None]], axis=0)
    p_cross = jnp.concatenate([cross("p", "y"), sums("y")[None]], axis=0)
    w_in = damped_solve(augment(gram_x, sums("x"), count), x_cross, percdamp)
    w_out = damped_solve(augment(gram_p, sums("p"), count), p_cross, percdamp)
    return {"in": w_in[:-1], "out": w_out[:-1]}, {"in": w_in[-1], "out": w_out[-1]}


# Old names, kept for a while: each warns and gives the new one.
__getattr__ = renamed(__name__, {"mm": "matmul_highest", "out": "output_projection"})
