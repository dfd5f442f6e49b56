"""Methods that are only their score (magnitude, Wanda, RIA): the selection lives here, as in
jaxpruner's base updater, so a score method is its score function and one registration line."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune.core.select import nm_prune_mask, num_pruned, smallest_mask
from jaxprune.core.sparsity import NM
from jaxprune.methods.base import Method, check_kernel, check_target
from jaxprune.methods.statistics import Statistic

SELECTIONS = ("layer", "output")
"""How an unstructured target is met: one threshold per ``layer``, or ⌊s·in⌋ per ``output``."""

ScoreFn = Callable[..., jax.Array]


@functools.partial(jax.jit, static_argnames=("score", "selection", "n", "m"))
def _select(kernel, stats, k, score_options, *, score, selection, n, m):
    scores = score(kernel, stats, **score_options)
    if n:
        pruned = nm_prune_mask(scores, n, m)
    else:
        pruned = smallest_mask(scores, k, axis=None if selection == "layer" else 0)
    keep = ~pruned
    return jnp.where(keep, kernel, jnp.zeros_like(kernel)), keep


def scored_method(
    name: str,
    score: ScoreFn,
    *,
    statistics: Statistic | None = None,
    options: Mapping[str, Any] | None = None,
    selection: str = "output",
    check: Callable[[jax.Array, Any, Mapping[str, Any]], None] | None = None,
) -> Method:
    """A method that is only its score: the selection lives here (jaxpruner's base updater).

    The method's ``solve(kernel, stats, target, **options)`` removes the lowest
    ``score(kernel, stats, **options)`` of an ``(in, out)`` kernel (any shape for a layer
    threshold): for ``Unstructured(s)``
    exactly ⌊s·size⌋ of the whole layer (``selection="layer"``) or ⌊s·in⌋ of every output column
    (``"output"``), ties broken by position; for ``NM(n, m)`` the ``m - n`` lowest of every ``m``
    consecutive inputs. A method that lets the user choose lists ``selection`` among its
    ``options``; it is then read from there and not passed to ``score``.

    Args:
      name: the registry name.
      score: ``score(kernel, stats, **score_options) -> float32 scores of kernel's shape``, traced
        inside ``jit`` (numeric options arrive as float32 scalars).
      statistics: what ``score`` reads of the kernel's inputs (``None``: no calibration).
      options: the method's options with their defaults (``selection`` among them if choosable).
      selection: the fixed selection when ``options`` has no ``selection``.
      check: ``check(kernel, stats, options)`` raising ``ValueError`` on bad input, before tracing.

    Returns:
      The :class:`Method` (not registered).
    """
    options = dict(options or {})

    def solve(kernel, stats, target, **opts):
        check_target(target, name)
        kernel = jnp.asarray(kernel)
        opts = {**options, **opts}
        chosen = opts.pop("selection", selection)
        if chosen not in SELECTIONS:
            raise ValueError(f"{name}'s selection must be 'layer' or 'output', got {chosen!r}")
        if chosen == "output" or isinstance(target, NM):  # a layer threshold takes any shape
            check_kernel(kernel, name)
        if check is not None:
            check(kernel, stats, opts)
        score_options = {key: jnp.float32(value) for key, value in opts.items()}
        n, m = (target.n, target.m) if isinstance(target, NM) else (0, 0)
        size = kernel.size if chosen == "layer" else kernel.shape[0]
        k = jnp.int32(0 if n else num_pruned(target.sparsity, size))
        if n and kernel.shape[0] % m:
            nm_prune_mask(kernel, n, m)  # raises the clear error before tracing
        return _select(kernel, stats, k, score_options, score=score, selection=chosen, n=n, m=m)

    solve.__doc__ = f"{name}-prunes one ``(in, out)`` kernel (see :func:`scored_method`)."
    return Method(name, solve, statistics=statistics, options=options)


__all__ = ["SELECTIONS", "scored_method"]
