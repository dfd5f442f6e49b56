"""Fine-tuning that keeps a pruned model pruned: an Optax wrapper over fixed keep-masks.

``keep_masks(inner, masks)`` wraps any Optax transformation (``optax.adamw``, a ``chain`` with
clipping, ...) so that no update ever makes a pruned entry non-zero:

- the gradients of pruned entries are zeroed *before* the inner transformation, so its state
  (momentum, second moments) never accumulates anything there;
- the updates of pruned entries are set to ``-param`` *after* it, so weight decay, or a param that
  was not exactly zero to begin with, still ends at exactly ``0`` after ``optax.apply_updates``
  (``x + (-x)`` is ``+0`` in floating point).

Written like optax's own wrappers: a state NamedTuple holding the inner state, and a pair of pure
functions. Masks are a pytree like the params with a boolean keep-mask where a leaf is pruned and
``None`` (or no entry) elsewhere — what :func:`jaxprune.prune` returns — or a ``{path: keep}``
mapping; the params may be nested dicts or an ``nnx.State``::

    result = jp.prune(model, params, calib, recipe)
    tx = keep_masks(optax.adamw(1e-4, weight_decay=0.01), result.masks)
    state = tx.init(result.params)
    updates, state = tx.update(grads, state, result.params)      # params are required
    params = optax.apply_updates(result.params, updates)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune.core.paths import Tree, flat_leaves, leaf_name, path_name


class KeepMasksState(NamedTuple):
    """The inner transformation's state (the masks are static, closed over by the pair)."""

    inner: optax.OptState


def mask_lookup(masks: Tree | Mapping[str, Any]) -> dict[str, jax.Array]:
    """``{path: keep}`` of every mask leaf (``None`` entries dropped); accepts either form."""
    if isinstance(masks, Mapping) and masks and all(isinstance(k, str) and "/" in k for k in masks):
        flat = dict(masks)
    else:
        flat = flat_leaves(masks)
    out = {}
    for path, keep in flat.items():
        if keep is None:
            continue
        keep = jnp.asarray(keep)
        if keep.dtype != jnp.bool_:
            raise ValueError(f"mask at {path!r} has dtype {keep.dtype}; keep-masks are boolean")
        out[leaf_name(path)] = keep
    return out


def map_masked(fn, tree: Tree, keep: Mapping[str, jax.Array], *rest: Tree) -> Tree:
    """``fn(leaf, keep_or_None, *rest_leaves)`` over ``tree``, leaves matched by path.

    Raises:
      ValueError: a mask's shape differs from its leaf's.
    """

    def apply(path, leaf, *others):
        name = leaf_name(path_name(path))
        mask = keep.get(name)
        if mask is not None and mask.shape != jnp.shape(leaf):
            raise ValueError(
                f"mask at {name!r} has shape {mask.shape}, the leaf has {jnp.shape(leaf)}"
            )
        return fn(leaf, mask, *others)

    return jax.tree_util.tree_map_with_path(apply, tree, *rest)


def keep_masks(
    inner: optax.GradientTransformation, masks: Tree | Mapping[str, Any]
) -> optax.GradientTransformation:
    """``inner`` with every pruned entry held at exactly zero (see the module docstring).

    Args:
      inner: any Optax transformation.
      masks: keep-masks (``True`` = trainable entry) as a params-like pytree with ``None`` where
        nothing is pruned, or ``{path: keep}``.

    Returns:
      A :class:`optax.GradientTransformation` whose ``update`` needs ``params``.

    Raises:
      ValueError: (at ``init``/``update``) a mask path that names no leaf, a mask of the wrong
        shape or dtype, or ``update`` called without ``params``.

    Example:
      AdamW with weight decay, the second column pruned: it stays exactly zero.

      >>> import jax.numpy as jnp, optax
      >>> from jaxprune.training import keep_masks
      >>> params = {"w": jnp.array([[1.0, 0.0], [3.0, 0.0]])}
      >>> masks = {"w": jnp.array([[True, False], [True, False]])}
      >>> tx = keep_masks(optax.adamw(0.1, weight_decay=0.1), masks)
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones((2, 2))}, state, params)
      >>> new = optax.apply_updates(params, updates)["w"]
      >>> new[:, 1], bool((new[:, 0] != params["w"][:, 0]).all())
      (Array([0., 0.], dtype=float32), True)
    """
    keep = mask_lookup(masks)
    inner = optax.with_extra_args_support(inner)

    def check(params: Tree) -> None:
        names = {leaf_name(p) for p in flat_leaves(params)}
        unknown = sorted(set(keep) - names)
        if unknown:
            raise ValueError(
                f"masks name leaves the params do not have: {unknown[:5]}; paths look like "
                f"{sorted(names)[:3]}"
            )

    def init_fn(params: Tree) -> KeepMasksState:
        check(params)
        return KeepMasksState(inner.init(params))

    def update_fn(updates: Tree, state: KeepMasksState, params: Tree | None = None, **extra):
        if params is None:
            raise ValueError(
                "keep_masks needs the params in update (tx.update(grads, state, params)) to hold "
                "pruned entries at zero"
            )
        masked = map_masked(
            lambda g, m: g if m is None else jnp.where(m, g, jnp.zeros_like(g)), updates, keep
        )
        new, inner_state = inner.update(masked, state.inner, params, **extra)
        new = map_masked(
            lambda u, m, p: u if m is None else jnp.where(m, u, -p.astype(u.dtype)),
            new,
            keep,
            params,
        )
        return new, KeepMasksState(inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


__all__ = ["KeepMasksState", "keep_masks", "leaf_name", "map_masked", "mask_lookup"]
