"""Sparsity allocation: which target each pruned leaf gets.

``uniform`` gives every leaf the recipe's target; ``apply_overrides`` lets path regexes set their
own; OWL (Yin et al. 2024, "Outlier Weighed Layerwise Sparsity") gives blocks with more outlier
Wanda scores a lower sparsity, within ``±λ`` of the target, so that the size-weighted overall
sparsity is still exactly the target.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.core.sparsity import Target, Unstructured, parse_target
from jaxprune.recipes import Recipe

__all__ = ["apply_overrides", "outlier_ratio", "owl_sparsities", "targets_for", "uniform"]


def uniform(paths: Sequence[str], target: Target) -> dict[str, Target]:
    """Every path gets ``target``."""
    return {path: target for path in paths}


def apply_overrides(
    allocation: Mapping[str, Target], overrides: Mapping[str, Target | float | str]
) -> dict[str, Target]:
    """``allocation`` with the target of every path matching an override regex replaced.

    Overrides apply in order, so a later pattern wins over an earlier one for the same path.
    Values may be targets or their text (``0.7``, ``"2:4"``).

    Raises:
      ValueError: a pattern is not a valid regex or matches no path of ``allocation``.
    """
    out = dict(allocation)
    for pattern, value in overrides.items():
        target = value if not isinstance(value, int | float | str) else parse_target(value)
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"invalid override regex {pattern!r}: {err}") from None
        hits = [path for path in out if regex.fullmatch(path)]
        if not hits:
            raise ValueError(
                f"override pattern {pattern!r} matches none of the pruned paths, e.g. "
                f"{list(out)[:3]} (patterns must match a whole path)"
            )
        out.update(dict.fromkeys(hits, target))
    return out


def targets_for(
    recipe: Recipe,
    paths: Sequence[str],
    block_of: Callable[[str], tuple[int, str] | None],
    block_sparsity: Mapping[int, float] | None = None,
) -> dict[str, Target]:
    """The target of every pruned path: the recipe's, per-block ones, then the overrides.

    Args:
      recipe: gives the uniform target and the overrides.
      paths: the pruned leaf paths.
      block_of: ``path -> (block index, relative path)`` or ``None`` outside the blocks
        (:meth:`jaxprune.models.LanguageModel.block_of`).
      block_sparsity: per-block unstructured sparsities (OWL) for paths inside blocks, or ``None``.
    """
    alloc = uniform(paths, recipe.target)
    if block_sparsity is not None:
        for path in alloc:
            where = block_of(path)
            if where is not None:
                alloc[path] = Unstructured(block_sparsity[where[0]])
    if recipe.overrides:
        alloc = apply_overrides(alloc, dict(recipe.overrides))
    return alloc


def outlier_ratio(scores: Sequence[jax.Array], m: float = 5.0) -> float:
    """Share of entries above ``m`` times the mean, over all ``scores`` arrays of one block pooled.

    With Wanda scores ``|W|·‖X‖`` this is OWL's layerwise outlier distribution (LOD) entry.
    """
    if not scores:
        raise ValueError("outlier_ratio needs at least one array of scores")
    total = sum(int(np.prod(jnp.shape(s))) for s in scores)
    mean = sum(jnp.sum(jnp.asarray(s, jnp.float32)) for s in scores) / total
    count = sum(jnp.sum(jnp.asarray(s, jnp.float32) > m * mean) for s in scores)
    return float(count) / total


def owl_sparsities(
    ratios: Sequence[float],
    target: float,
    lam: float = 0.08,
    sizes: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Per-block sparsities from outlier ratios (OWL, eq. in §3 of the paper).

    Ratios are min-max scaled into ``[0, 2λ]`` and turned into keep fractions around
    ``1 - target`` (more outliers → keep more), then shifted so that the size-weighted mean
    sparsity equals ``target`` exactly; sparsities are clipped to ``[0, 0.999]`` with the shift
    found again after clipping, so the total stays exact.

    Args:
      ratios: outlier ratio of each block (:func:`outlier_ratio`).
      target: overall sparsity in ``[0, 1)``.
      lam: the spread λ; sparsities lie within ``target ± λ`` before clipping.
      sizes: number of pruned weights of each block (equal if ``None``).

    Returns:
      float64 array of per-block sparsities.
    """
    ratios = np.asarray(ratios, np.float64)
    if ratios.ndim != 1 or ratios.size == 0:
        raise ValueError(f"need a non-empty 1-D list of outlier ratios, got shape {ratios.shape}")
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target}")
    if lam < 0:
        raise ValueError(f"OWL's lambda must be >= 0, got {lam}")
    weights = np.ones_like(ratios) if sizes is None else np.asarray(sizes, np.float64)
    if weights.shape != ratios.shape or np.any(weights <= 0):
        raise ValueError(f"sizes must be positive, one per ratio; got {weights}")
    weights = weights / weights.sum()
    span = ratios.max() - ratios.min()
    spread = np.zeros_like(ratios) if span == 0 else (ratios - ratios.min()) / span * 2 * lam
    # Sparsity before the shift: more outliers → lower sparsity.
    base = -spread
    upper = 0.999

    def mean_at(shift: float) -> float:
        return float(np.dot(weights, np.clip(base + shift, 0.0, upper)))

    # mean_at is monotone in the shift: bisection finds the one that hits the target.
    lo, hi = target - base.max() - 1.0, target - base.min() + 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mean_at(mid) < target:
            lo = mid
        else:
            hi = mid
    return np.clip(base + 0.5 * (lo + hi), 0.0, upper)
