"""Masks of a sparse model saved without them, read from its exact zeros."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxprune.core.paths import flat_leaves, select_paths

ZERO_MASK_FRACTION = 0.1
"""A kernel with at least this share of exact zeros counts as pruned (:func:`zero_masks`).

A dense model has next to none (a 4-bit GGUF with a zero point: none; symmetric 6-bit blocks:
about 1.6%); one-shot pruning leaves 20–80%."""


def zero_masks(model: Any, params: Any, min_fraction: float = ZERO_MASK_FRACTION) -> Any:
    """Keep-masks ``w != 0`` of the family's prunable kernels that are sparse, or ``None``.

    For a pruned model saved without its masks (a sparse Hugging Face export, a GGUF): training
    it as if dense would fill the zeros in. Only kernels with at least ``min_fraction`` exact
    zeros get a mask; ``None`` when none has.
    """
    flat = flat_leaves(params)
    masks = {}
    for path in select_paths(params, model.family.default_targets):
        kernel = flat[path]
        if jnp.ndim(kernel) == 2 and float(jnp.mean(kernel == 0)) >= min_fraction:
            masks[path] = jnp.asarray(kernel != 0)
    return masks or None


__all__ = ["ZERO_MASK_FRACTION", "zero_masks"]
