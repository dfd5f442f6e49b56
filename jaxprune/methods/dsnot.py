"""DSnoT: training-free prune-and-grow of a pruned layer's mask (a refinement of any method).

Zhang et al., "Dynamic Sparse No Training: Training-Free Fine-tuning for Sparse LLMs" (ICLR 2024),
following the authors' ``prune_DSnoT``. For every output ``j`` of a Flax ``(in, out)`` kernel the
targeted error is the expected change of that output, ``r_j = Σ_i (W_ij − Ŵ_ij) μ_i`` with ``μ``
the mean input (``W`` dense, ``Ŵ`` the base method's result). Each cycle swaps one kept weight
``p`` out and one pruned weight ``g`` back in, per output:

* grow: the pruned weight with the largest ``W_gj μ_g / σ²_g`` when ``r_j > 0`` (the smallest when
  ``r_j ≤ 0``), ``σ²`` the input variance (``var_power`` its exponent, the authors' 1);
* prune (unstructured): when ``r_j ≥ 0`` the weight with ``Ŵ_pj μ_p < 0`` of smallest Wanda score
  ``|Ŵ_pj|·‖X_p‖``, else the weight with ``Ŵ_pj μ_p > 0`` of smallest score (the authors' ordering:
  negative contributions by increasing score, then positive ones by decreasing score, walked from
  the end that reduces ``|r_j|``); N:M: the kept weight of smallest Wanda score in ``g``'s group of
  ``m``, so that every group keeps exactly ``n``;
* ``r_j ← r_j + Ŵ_pj μ_p − W_gj μ_g``. An output stops for good once ``|r_j| ≤ threshold``, or a
  swap would not reduce ``|r_j|`` (``monotone``), or (N:M, as the authors do) would flip its sign;
  all stop after ``max_cycle`` cycles (the authors' 50).

Every output keeps its number of weights exactly (a swap is one out, one in), so the layer and
each N:M group keep the base method's count. Regrown weights take their dense values; weights the
base kept keep the base's values (SparseGPT's updates included), so the error above is the one of
the base's actual result. DSnoT reads :data:`~jaxprune.methods.statistics.MOMENTS` (``μ``, ``σ²``
and ``‖X_i‖² = Σ x_i²``), whatever the base reads.

Departures: ``threshold`` is in units of ``μ`` per token; the authors sum inputs over their
2048-token windows, so their 0.1 is 0.1/2048 here (the default). ``σ²`` is the variance over all
tokens (the authors average per-window variances). A swap that would not reduce ``|r_j|`` stops the
output (the authors' unstructured path applies it; ``monotone=False`` does too), which makes
``|r_j|`` non-increasing: on random correlated layers (``benchmarks/dsnot_layer.py``) the authors'
rule swaps every cycle, overshoots and roughly doubles Wanda's layer error at 70%, where the
monotone rule lowers it; on SmolLM2's real linears it raises the error in 105 of 210 (up to 31×
on block 0's q/k_proj), the monotone rule in 3. The N:M
prune candidate is ranked by Wanda's score whatever the base (the authors rank by the base's own
score). The growth candidates are the pruned weights only (the authors' order also holds the kept
ones, at score 0, where a swap would change the count). The authors' script leaves the MLP linears
to the base method by default (``--skip_layer mlp``); a refinement sees no layer names, so DSnoT
refines every linear here (their default measured worse on SmolLM2, below). Their unstructured
path never checks the sign of ``r_j`` (``--without_same_sign`` is ``type=bool``, so always true).

On a real model the target does not carry to perplexity. SmolLM2-135M, Wanda 70%, public
protocol: Hamlet perplexity 349.66 → 427.48 with every linear refined, 469.66 with the attention
linears only, 424.44 with those and the authors' rule (their defaults, up to the departures above),
403.85 with o_proj and down_proj only (``benchmarks/dsnot_real_layers.py``,
``results/dsnot_cause_cpu.json``). On the captured inputs of all 210 linears DSnoT does what it
promises: ``|r_j|`` → ~0 and the layer error ‖X(W − Ŵ)‖² down by a median 22% (up in 3; 2× on
block 0's q_proj), because it removes the mean-output part of the error (a median 23% of
Wanda's); every swap drops a kept weight for a pruned one of lower Wanda score, and the
token-varying part of the error grows in 201 of 210 linears (median +1.6%). The variance is not
cancellation-limited (σ²/E[x²] ≥ 3·10⁻⁴ on every input) and each window's first token is not the
cause (DSnoT on moments without it gives layer errors within 1% of these on 208 of 210 linears).
No defect against the authors' algorithm was found; lower layer errors on every subset of kernels
tried still gave a higher perplexity, so on this model the mean-output error DSnoT removes is not
what perplexity depends on.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxprune.core.sparsity import NM, Target
from jaxprune.methods.base import Refinement, check_target, register_refinement
from jaxprune.methods.statistics import MOMENTS, Moments

OPTIONS = {"max_cycle": 50, "threshold": 0.1 / 2048, "var_power": 1.0, "monotone": True}
"""DSnoT's options with the authors' defaults (``threshold`` per token: see the module doc)."""


def _prune_order(prune_val: jax.Array, wanda: jax.Array, keep: jax.Array) -> jax.Array:
    """Per column: kept negatives by increasing score, zeros, positives by decreasing, pruned."""
    group = jnp.where(keep, jnp.where(prune_val < 0, 0, jnp.where(prune_val == 0, 1, 2)), 3)
    first = jnp.argsort(jnp.where(prune_val > 0, -wanda, wanda), axis=0, stable=True)
    second = jnp.argsort(jnp.take_along_axis(group, first, 0), axis=0, stable=True)
    return jnp.take_along_axis(first, second, 0)


def _nm_candidate(grow: jax.Array, wanda: jax.Array, eligible: jax.Array, m: int):
    """The eligible weight of smallest score in each column's group of ``grow``; any eligible."""
    start = grow - grow % m
    rows = start[None, :] + jnp.arange(m)[:, None]
    scores = jnp.where(
        jnp.take_along_axis(eligible, rows, 0), jnp.take_along_axis(wanda, rows, 0), jnp.inf
    )
    best = jnp.argmin(scores, axis=0)
    return start + best, jnp.isfinite(jnp.min(scores, axis=0))


@functools.partial(jax.jit, static_argnames=("nm",))
def refine_mask(
    dense: jax.Array,
    kernel: jax.Array,
    keep: jax.Array,
    moments: Moments,
    threshold: jax.Array,
    max_cycle: jax.Array,
    var_power: jax.Array,
    monotone: jax.Array,
    *,
    nm: int | None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The cycles: ``(new kernel, new keep, r before, r after)``; ``nm`` the group size or None."""
    dense32 = dense.astype(jnp.float32)
    w = jnp.where(keep, kernel.astype(jnp.float32), 0.0)
    mean = moments.mean[:, None]
    grow_val, prune_val = dense32 * mean, w * mean
    r0 = jnp.sum((dense32 - w) * mean, axis=0)
    var = jnp.maximum(moments.variance, 1e-12)[:, None] ** var_power
    grow_order = jnp.argsort(jnp.where(keep, jnp.inf, grow_val / var), axis=0, stable=True)
    wanda = jnp.abs(w) * jnp.sqrt(moments.sq_sum)[:, None]
    prune_order = _prune_order(prune_val, wanda, keep)
    cols = jnp.arange(dense.shape[1])
    n_pruned = jnp.sum(~keep, axis=0)
    zero = jnp.zeros_like(n_pruned)

    def body(carry):
        cycle, active, new_keep, regrown, r, gf, gb, pf, pb = carry
        grow = grow_order[jnp.where(r > 0, gb, gf), cols]
        valid = gf <= gb
        if nm is None:
            prune = prune_order[jnp.where(r < 0, pb, pf), cols]
            valid &= pf <= pb
        else:
            prune, found = _nm_candidate(grow, wanda, new_keep & ~regrown, nm)
            valid &= found
        after = r + prune_val[prune, cols] - grow_val[grow, cols]
        ok = active & valid & (jnp.abs(r) > threshold) & ((jnp.abs(after) < jnp.abs(r)) | ~monotone)
        if nm is not None:
            ok &= jnp.sign(after) == jnp.sign(r0)
        new_keep = new_keep.at[prune, cols].set(new_keep[prune, cols] & ~ok)
        new_keep = new_keep.at[grow, cols].set(new_keep[grow, cols] | ok)
        regrown = regrown.at[grow, cols].set(regrown[grow, cols] | ok)
        gf, gb = gf + (r <= 0), gb - (r > 0)
        pf, pb = pf + (r >= 0), pb - (r < 0)
        r = jnp.where(ok, after, r)
        return cycle + 1, ok, new_keep, regrown, r, gf, gb, pf, pb

    pointers = (zero, n_pruned - 1, zero, dense.shape[0] - n_pruned - 1)
    init = (jnp.int32(0), jnp.ones_like(r0, bool), keep, jnp.zeros_like(keep), r0, *pointers)
    _, _, new_keep, _, r, *_ = lax.while_loop(
        lambda c: (c[0] < max_cycle) & jnp.any(c[1]), body, init
    )
    new = jnp.where(new_keep, jnp.where(keep, w, dense32), 0.0).astype(kernel.dtype)
    return new, new_keep, r0, r


def check_options(max_cycle: Any, threshold: Any, var_power: Any, monotone: Any) -> None:
    """``ValueError`` naming the first option out of range."""
    if not isinstance(monotone, bool | np.bool_):
        raise ValueError(f"dsnot option monotone must be true or false, got {monotone!r}")
    if not isinstance(max_cycle, int | np.integer) or max_cycle < 0:
        raise ValueError(f"dsnot option max_cycle must be an integer >= 0, got {max_cycle!r}")
    for name, value in {"threshold": threshold, "var_power": var_power}.items():
        if not (isinstance(value, int | float) and np.isfinite(value) and value >= 0):
            raise ValueError(f"dsnot option {name} must be a finite number >= 0, got {value!r}")


def refine(
    dense: jax.Array,
    kernel: jax.Array,
    keep: jax.Array,
    stats: tuple[Any, Moments],
    target: Target,
    *,
    max_cycle: int = 50,
    threshold: float = OPTIONS["threshold"],
    var_power: float = 1.0,
    monotone: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """The refinement interface: DSnoT's cycles on ``kernel``/``keep`` (see the module docstring).

    Args:
      dense: the layer's dense ``(in, out)`` kernel.
      kernel, keep: the base method's pruned kernel and keep mask.
      stats: ``(base statistics, Moments)`` as :func:`~jaxprune.methods.base.refined` passes them.
      target: the layer's target (``NM(n, m)`` keeps swaps inside groups of ``m`` inputs).
      max_cycle, threshold, var_power, monotone: see :data:`OPTIONS` and the module docstring.

    Returns:
      ``(refined kernel in the kernel's dtype, bool keep mask)`` with the base's counts.
    """
    check_target(target, "dsnot")
    check_options(max_cycle, threshold, var_power, monotone)
    moments = stats[1]
    if not isinstance(moments, Moments) or moments.sum.shape != dense.shape[:1]:
        raise ValueError(
            f"dsnot needs the input moments of the layer (statistics.MOMENTS), shape "
            f"{dense.shape[:1]}; got {type(moments).__name__}"
        )
    nm = target.m if isinstance(target, NM) else None
    new, new_keep, _, _ = refine_mask(
        jnp.asarray(dense),
        jnp.asarray(kernel),
        jnp.asarray(keep, bool),
        moments,
        jnp.float32(threshold),
        jnp.int32(max_cycle),
        jnp.float32(var_power),
        jnp.bool_(monotone),
        nm=nm,
    )
    return new, new_keep


REFINEMENT = register_refinement(Refinement("dsnot", refine, statistics=MOMENTS, options=OPTIONS))
