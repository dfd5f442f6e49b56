"""Per-leaf sparsity targets for training-time pruning: uniform, ERK, and a regex map.

A distribution turns a params pytree (nested dicts, ``nnx.State``, any pytree) into
``{path: pattern}``, the targets :func:`jaxprune.training.sparse_training` takes::

    targets = uniform(params, 0.9)                              # every kernel 90% sparse
    targets = erk(params, 0.9)                                  # Erdős–Rényi-kernel, 90% overall
    targets = by_regex(params, {r".*conv.*kernel": NM(2, 4), r"head/kernel": 0.5})

Leaves are chosen by ``include`` (a regex that must match the whole path; by default every leaf
with two or more axes, i.e. kernels, not biases or norms) minus ``exclude``. Paths are those of
:func:`jaxprune.core.paths.leaf_paths`, with ``nnx.State``'s trailing ``/value`` dropped.

ERK (Evci et al. 2020, "Rigging the Lottery", after Mocanu et al.'s Erdős–Rényi) gives a leaf of
shape ``(k_1, …, k_d)`` the density ``ε·Σk_i / Πk_i``, with one ``ε`` for all leaves chosen so that
the number of kept weights equals ``(1 - s)·Σ size``; a leaf whose density would exceed 1 is made
dense and ``ε`` is solved again for the others (as the reference implementation does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from jaxprune.allocation import apply_overrides
from jaxprune.core.paths import Tree, named_leaves
from jaxprune.core.sparsity import NM, Channel, Pattern, Unstructured, parse_target

__all__ = ["by_regex", "erk", "erk_densities", "prunable_shapes", "uniform"]


def prunable_shapes(
    params: Tree, include: str | None = None, exclude: str | None = None
) -> dict[str, tuple[int, ...]]:
    """``{path: shape}`` of the leaves a distribution targets.

    Args:
      params: any pytree of arrays.
      include: regex of the paths to target (whole-path match); default: leaves with ``ndim >= 2``.
      exclude: regex of paths to leave dense, applied after ``include``.

    Raises:
      ValueError: a regex does not compile, or nothing is selected.
    """
    shapes = {p: tuple(jnp.shape(x)) for p, x in named_leaves(params).items()}
    try:
        inc = None if include is None else re.compile(include)
        exc = None if exclude is None else re.compile(exclude)
    except re.error as err:
        raise ValueError(f"invalid path regex: {err}") from None
    chosen = {
        path: shape
        for path, shape in shapes.items()
        if (len(shape) >= 2 if inc is None else inc.fullmatch(path))
        and not (exc is not None and exc.fullmatch(path))
    }
    if not chosen:
        raise ValueError(
            f"no leaf selected (include={include!r}, exclude={exclude!r}); paths look like "
            f"{list(shapes)[:4]}"
        )
    return chosen


def _as_pattern(target: Pattern | float | str) -> Pattern:
    if isinstance(target, Unstructured | NM | Channel):
        return target
    return parse_target(target)


def uniform(
    params: Tree,
    target: Pattern | float | str,
    include: str | None = None,
    exclude: str | None = None,
) -> dict[str, Pattern]:
    """Every selected leaf gets ``target`` (a pattern, a fraction, or ``"2:4"``)."""
    pattern = _as_pattern(target)
    return dict.fromkeys(prunable_shapes(params, include, exclude), pattern)


def erk_densities(
    shapes: Mapping[str, tuple[int, ...]], sparsity: float, power: float = 1.0
) -> dict[str, float]:
    """ERK densities of leaves of ``shapes`` whose kept counts total ``(1 - sparsity)·Σ size``.

    ``power`` < 1 softens the distribution (``(Σk_i / Πk_i) ** power``), as in the reference.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    sizes = {p: float(np.prod(s)) for p, s in shapes.items()}
    raw = {p: (float(np.sum(s)) / sizes[p]) ** power for p, s in shapes.items()}
    dense: set[str] = set()
    while True:
        free = [p for p in shapes if p not in dense]
        # ε·Σ raw_i·n_i over the free leaves + Σ n_j over the dense ones = (1 - s)·Σ n.
        budget = (1.0 - sparsity) * sum(sizes.values()) - sum(sizes[p] for p in dense)
        eps = budget / sum(raw[p] * sizes[p] for p in free)
        worst = max(free, key=lambda p: raw[p])
        if eps * raw[worst] <= 1.0 or len(free) == 1:
            break
        dense |= {p for p in free if raw[p] == raw[worst]}
    return {p: 1.0 if p in dense else min(eps * raw[p], 1.0) for p in shapes}


def erk(
    params: Tree,
    sparsity: float,
    include: str | None = None,
    exclude: str | None = None,
    power: float = 1.0,
) -> dict[str, Pattern]:
    """ERK targets: ``Unstructured(1 - density)`` per selected leaf (see the module docstring)."""
    densities = erk_densities(prunable_shapes(params, include, exclude), sparsity, power)
    return {p: Unstructured(max(0.0, 1.0 - d)) for p, d in densities.items()}


def by_regex(
    params: Tree,
    overrides: Mapping[str, Pattern | float | str],
    base: Mapping[str, Pattern] | None = None,
) -> dict[str, Pattern]:
    """Targets from ``{path regex: target}``, later patterns winning, optionally over ``base``.

    Without ``base``, the candidates are all leaves with ``ndim >= 2``; a regex matching none of
    them is an error (``jaxprune.allocation.apply_overrides``). A ``0`` target leaves a leaf
    dense (it is dropped from the result).
    """
    if base is None:
        base = dict.fromkeys(prunable_shapes(params), Unstructured(0.0))
    patterns = {k: _as_pattern(v) for k, v in overrides.items()}
    out = apply_overrides(dict(base), patterns)
    return {p: t for p, t in out.items() if not (isinstance(t, Unstructured) and t.sparsity == 0)}
