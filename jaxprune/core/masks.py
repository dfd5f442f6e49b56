"""The mask core: pure functions from scores and params pytrees to keep-masks and back.

A keep-mask is a boolean array shaped like its leaf, ``True`` where the weight stays. Leaves are
named by ``/``-joined paths (``"layers/3/mlp/up_proj/kernel"``) and selected by regular
expressions that must match a whole path. Score → mask functions take the scores of one kernel in
the Flax layout ``(in, out)``, where one output channel is a column::

    keep = masks.mask_per_output(jnp.abs(kernel), 0.5)   # ⌊0.5·in⌋ zeros in every column
    pruned = masks.apply_masks(params, {"layers/0/mlp/up_proj/kernel": keep})

Selections are exact: a sparsity ``s`` over ``n`` entries removes ``⌊s·n⌋`` of them (ties broken by
position), so counts are laws the tests can check, not approximations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.core.paths import Tree, flat_leaves, get_leaf, leaf_paths, set_leaves
from jaxprune.core.select import nm_prune_mask, num_pruned, smallest_mask

__all__ = [
    "apply_masks",
    "mask_global",
    "mask_nm",
    "mask_per_layer",
    "mask_per_output",
    "sparsity_report",
]


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")


def mask_per_output(scores: jax.Array, sparsity: float) -> jax.Array:
    """Keeps all but the ``⌊s·in⌋`` lowest scores of each output channel of an ``(in, out)`` array.

    This is the Wanda comparison group: each column competes only with itself.
    """
    _check_sparsity(sparsity)
    scores = jnp.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"per-output masks need 2-D (in, out) scores, got {scores.shape}")
    return ~smallest_mask(scores, num_pruned(sparsity, scores.shape[0]), axis=0)


def mask_per_layer(scores: jax.Array, sparsity: float) -> jax.Array:
    """Keeps all but the ``⌊s·size⌋`` lowest scores of the whole array (one threshold)."""
    _check_sparsity(sparsity)
    scores = jnp.asarray(scores)
    return ~smallest_mask(scores, num_pruned(sparsity, scores.size))


def mask_global(scores: Mapping[str, jax.Array], sparsity: float) -> dict[str, jax.Array]:
    """One threshold over several arrays: all but the ``⌊s·total⌋`` lowest scores overall are kept.

    Layers may end with very different sparsities; only the total is fixed.
    """
    _check_sparsity(sparsity)
    if not scores:
        raise ValueError("global masking needs at least one array of scores")
    names = list(scores)
    flat = jnp.concatenate([jnp.ravel(jnp.asarray(scores[n], jnp.float32)) for n in names])
    keep = ~smallest_mask(flat, num_pruned(sparsity, flat.size))
    out, offset = {}, 0
    for name in names:
        shape = jnp.shape(scores[name])
        size = int(np.prod(shape))
        out[name] = keep[offset : offset + size].reshape(shape)
        offset += size
    return out


def mask_nm(scores: jax.Array, n: int, m: int) -> jax.Array:
    """Keeps the ``n`` highest scores of every ``m`` consecutive inputs of each output channel."""
    if not (0 < n < m):
        raise ValueError(f"an N:M pattern needs 0 < N < M, got {n}:{m}")
    scores = jnp.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"N:M masks need 2-D (in, out) scores, got {scores.shape}")
    return ~nm_prune_mask(scores, n, m)


def apply_masks(params: Tree, masks: Mapping[str, jax.Array] | Tree) -> Tree:
    """``params`` with every masked leaf multiplied by its keep-mask (zeros where ``False``).

    Args:
      params: nested-dict params.
      masks: ``{path: keep}`` or a tree like ``params`` with masks at pruned leaves and ``None``
        elsewhere (as :func:`jaxprune.prune` returns).

    Raises:
      ValueError: a mask's shape differs from its leaf's.
    """
    if not (isinstance(masks, Mapping) and all(isinstance(k, str) and "/" in k for k in masks)):
        masks = flat_leaves(masks)
    new = {}
    for path, keep in masks.items():
        leaf = get_leaf(params, path)
        if jnp.shape(keep) != jnp.shape(leaf):
            raise ValueError(
                f"mask for {path!r} has shape {jnp.shape(keep)}, the leaf has {jnp.shape(leaf)}"
            )
        new[path] = jnp.where(keep, leaf, jnp.zeros_like(leaf))
    return set_leaves(params, new)


def sparsity_report(params: Tree, paths: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Zeros, size and sparsity of each leaf at ``paths`` (every array leaf if ``None``).

    Returns:
      ``{path: {"zeros", "size", "sparsity"}, ..., "overall": {...}}``; ``overall`` pools all
      the listed leaves, weighted by size.
    """
    paths = leaf_paths(params) if paths is None else list(paths)
    report: dict[str, dict[str, Any]] = {}
    zeros_total = size_total = 0
    for path in paths:
        leaf = get_leaf(params, path)
        zeros = int(jnp.sum(jnp.asarray(leaf) == 0))
        size = int(np.prod(jnp.shape(leaf)))
        report[path] = {"zeros": zeros, "size": size, "sparsity": zeros / max(size, 1)}
        zeros_total += zeros
        size_total += size
    report["overall"] = {
        "zeros": zeros_total,
        "size": size_total,
        "sparsity": zeros_total / max(size_total, 1),
    }
    return report
