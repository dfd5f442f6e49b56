"""One-shot pruning of stacked expert kernels: statistics from each expert's routed tokens only.

A mixture-of-experts block stores each expert projection as one ``(experts, in, out)`` kernel and
hands its inputs to the engine as :class:`~jaxprune.models.moe.Routed` (the inputs and which
tokens each expert received). The statistics of such a tap are the method's statistic stacked
over the experts, each accumulated from exactly the tokens routed to its expert
(``Statistic.update_masked``, one batched program over the experts), with the count of those
tokens (:class:`ExpertStats`). Each expert's kernel is then solved by the method on its own
statistics (batched over the experts), so every expert reaches the target sparsity exactly.

An expert that received fewer than :data:`MIN_EXPERT_TOKENS` calibration tokens has statistics
too thin to trust (SparseGPT's Hessian of a never-routed expert is zero, which would zero the
whole expert); its kernel is pruned by weight magnitude instead, at the same target, and the
report lists those experts (``fallback_experts``) and every expert's token count
(``expert_tokens``).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxprune.core.sparsity import Target
from jaxprune.methods.base import Method, get_method
from jaxprune.methods.statistics import Statistic
from jaxprune.models.moe import Routed

MIN_EXPERT_TOKENS = 16
"""An expert routed fewer calibration tokens than this is pruned by magnitude (see above)."""


class ExpertStats(NamedTuple):
    """Statistics of a stacked expert kernel's inputs.

    Attributes:
      tokens: ``(experts,)`` int32, the calibration tokens routed to each expert.
      stats: the method's statistic state with a leading ``experts`` axis.
    """

    tokens: jax.Array
    stats: Any


def init_stats(statistic: Statistic, kernel_shape: tuple[int, ...]) -> Any:
    """Empty statistics for the inputs of a kernel of ``kernel_shape``: the statistic's own state
    for an ``(in, out)`` kernel, :class:`ExpertStats` for a stacked ``(experts, in, out)`` one.

    Raises:
      ValueError: a stacked kernel whose method's statistic cannot add masked tokens.
    """
    if len(kernel_shape) != 3:
        return statistic.init(kernel_shape[0])
    if statistic.update_masked is None:
        raise ValueError(
            "this method's statistics cannot be gathered per expert (its Statistic has no "
            "update_masked); exclude the expert kernels from the targets or use another method"
        )
    experts, d_in = kernel_shape[:2]
    state = statistic.init(d_in)
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (experts, *a.shape)), state)
    return ExpertStats(jnp.zeros((experts,), jnp.int32), stacked)


def update_stats(statistic: Statistic, state: Any, x: Any) -> Any:
    """``state`` with the batch ``x`` added (per expert, routed tokens only, when ``x`` is
    :class:`Routed`)."""
    if not isinstance(x, Routed):
        return statistic.update(state, x)
    shared = x.x.ndim == 2
    inputs = x.x.reshape(-1, x.x.shape[-1]) if shared else x.x
    update = jax.vmap(statistic.update_masked, in_axes=(0, None if shared else 0, 0))
    stats = update(state.stats, inputs, x.mask)
    return ExpertStats(state.tokens + jnp.sum(x.mask, axis=1, dtype=jnp.int32), stats)


def solve_stacked(
    method: Method,
    options: Mapping[str, Any],
    kernel: jax.Array,
    stats: ExpertStats | None,
    target: Target,
) -> tuple[jax.Array, jax.Array]:
    """Each expert of a stacked kernel solved on its own statistics (batched over the experts);
    experts routed fewer than :data:`MIN_EXPERT_TOKENS` tokens are pruned by magnitude instead.

    Returns:
      ``(pruned kernel, keep mask)``, both ``(experts, in, out)``.
    """
    if stats is None:
        solve = jax.vmap(lambda k: method.solve(k, None, target, **options))
        return solve(kernel)
    new, keep = _each_expert(method, options, kernel, stats.stats, target)
    few = stats.tokens < MIN_EXPERT_TOKENS
    if bool(jnp.any(few)):
        magnitude = get_method("magnitude")
        plain, plain_keep = jax.vmap(lambda k: magnitude.solve(k, None, target))(kernel)
        new = jnp.where(few[:, None, None], plain, new)
        keep = jnp.where(few[:, None, None], plain_keep, keep)
    return new, keep


def _each_expert(method: Method, options, kernel: jax.Array, stats: Any, target: Target):
    """``method.solve`` of every expert, batched (``vmap``); a solver with host-side control flow
    on traced values (ALPS's convergence test) cannot be batched, and then solves expert by
    expert."""
    solve = lambda k, s: method.solve(k, s, target, **options)  # noqa: E731
    try:
        return jax.vmap(solve)(kernel, stats)
    except jax.errors.ConcretizationTypeError:
        parts = range(len(kernel))
        solved = [solve(kernel[e], jax.tree.map(operator.itemgetter(e), stats)) for e in parts]
        return tuple(jnp.stack(parts) for parts in zip(*solved, strict=True))


def report(stats: ExpertStats) -> dict[str, Any]:
    """The prune report's entries of a stacked kernel: every expert's routed tokens and the
    experts pruned by the fallback rule."""
    few = jnp.flatnonzero(stats.tokens < MIN_EXPERT_TOKENS)
    return {
        "expert_tokens": [int(n) for n in stats.tokens],
        "fallback_experts": [int(e) for e in few],
        "fallback_rule": f"magnitude below {MIN_EXPERT_TOKENS} routed tokens",
    }


__all__ = [
    "MIN_EXPERT_TOKENS",
    "ExpertStats",
    "init_stats",
    "report",
    "solve_stacked",
    "update_stats",
]
