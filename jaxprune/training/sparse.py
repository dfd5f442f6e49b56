"""Sparse training as one Optax transformation: masks that change on a schedule, for any pytree.

``sparse_training(inner, targets, updater, schedule)`` wraps any Optax transformation. Its state
holds the keep-masks (``{path: bool array}``, so the params may be nested dicts, an
``nnx.State`` or any pytree), the inner state and a step count. At each ``update``:

1. if ``schedule.is_update(step)``, every targeted leaf's mask is recomputed by the updater at
   ``schedule.scale(step)`` of its target (exact counts; inside ``lax.cond``, so one compiled step
   serves the whole run, under ``jit`` and on a mesh alike);
2. the gradients of pruned entries are zeroed before the inner transformation, so its state never
   accumulates anything there (entries a drop-and-grow updater activates get their inner state
   reset to zero first, wherever the state holds params-shaped trees);
3. pruned entries get the update ``-param``, so after ``optax.apply_updates`` they are exactly
   ``0`` (weight decay included), as :func:`jaxprune.training.keep_masks` does for fixed masks.

With the STE updater the weights stay dense (steps 2–3 are skipped); run the model on
:func:`forward_params`, which masks them with a straight-through gradient. For every other updater
``forward_params`` is the identity in value and gradient, so a training loop can always call it::

    targets = distributions.erk(params, 0.9)
    tx = sparse_training(optax.adam(1e-3), targets, updaters.rigl(0.3, decay_steps=3000),
                         schedules.Periodic(every=100, end=3000), seed=0)
    state = tx.init(params)
    grads = jax.grad(loss)(forward_params(params, state), batch)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)

Randomness (initial random masks, random scores, SET's growth) comes from ``seed`` folded with the
step and the leaf's position, so a run is reproducible and needs no key in the state.

Masks are per leaf: a ``Channel`` target zeroes a kernel's output channels but not the BatchNorm or
the next layer's inputs that go with them; to remove coupled channels (and shrink the model) use
:mod:`jaxprune.structured.filters`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxprune.core.paths import Tree, named_leaves
from jaxprune.core.patterns import check_pattern
from jaxprune.core.sparsity import NM, Pattern
from jaxprune.training.masked import map_masked
from jaxprune.training.schedules import OneShot, Polynomial, Schedule
from jaxprune.training.updaters import Updater, magnitude

__all__ = ["SparseState", "final_params", "forward_params", "masks_of", "sparse_training"]


class SparseState(NamedTuple):
    """``masks``: ``{path: keep}``; ``inner``: the wrapped state; ``count``: steps taken."""

    masks: dict[str, jax.Array]
    inner: optax.OptState
    count: jax.Array


def _check(targets: Mapping[str, Pattern], params: Tree, updater: Updater, schedule) -> None:
    leaves = named_leaves(params)
    unknown = sorted(set(targets) - set(leaves))
    if unknown:
        raise ValueError(
            f"targets name leaves the params do not have: {unknown[:4]}; paths look like "
            f"{list(leaves)[:3]}"
        )
    if not targets:
        raise ValueError("no leaf is targeted; build targets with jaxprune.training.distributions")
    for path, pattern in targets.items():
        check_pattern(pattern, jnp.shape(leaves[path]), path)
        updater.check(pattern, path)
        if isinstance(pattern, NM) and isinstance(schedule, Polynomial):
            raise ValueError(
                f"{path!r}: an N:M pattern has no gradual version; use a OneShot or Periodic "
                "schedule for N:M targets"
            )
    if updater.regrow and isinstance(schedule, OneShot | Polynomial):
        raise ValueError(
            f"{updater.name} keeps the sparsity fixed while it drops and grows; use a Periodic "
            "(or Fixed) schedule, not a pruning schedule"
        )


def _key(seed: int, phase: int, step: jax.Array, index: int) -> jax.Array:
    base = jax.random.fold_in(jax.random.PRNGKey(seed), phase)
    return jax.random.fold_in(jax.random.fold_in(base, step), index)


def sparse_training(
    inner: optax.GradientTransformation,
    targets: Mapping[str, Pattern],
    updater: Updater | None = None,
    schedule: Schedule | None = None,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    """``inner`` trained sparse: masks kept, updated on ``schedule`` by ``updater``.

    Args:
      inner: any Optax transformation.
      targets: ``{path: pattern}`` of the pruned leaves (:mod:`jaxprune.training.distributions`).
      updater: how masks change (:mod:`jaxprune.training.updaters`); default magnitude.
      schedule: when and how much (:mod:`jaxprune.training.schedules`); default ``OneShot(0)``.
      seed: seeds random masks and scores.

    Returns:
      A transformation whose ``update`` needs ``params``; its state is a :class:`SparseState`.

    Raises:
      ValueError: (at ``init``) a target naming no leaf, a pattern the leaf's shape or the updater
        cannot take, or a schedule the updater cannot follow.

    Example:
      Plain SGD kept at 50% sparsity (one-shot magnitude masks at step 0, the defaults):

      >>> import jax.numpy as jnp, optax
      >>> from jaxprune.core.sparsity import Unstructured
      >>> from jaxprune.training import sparse_training
      >>> params = {"dense": {"kernel": jnp.arange(1.0, 17.0).reshape(4, 4)}}
      >>> tx = sparse_training(optax.sgd(0.1), {"dense/kernel": Unstructured(0.5)})
      >>> state = tx.init(params)
      >>> state.masks["dense/kernel"].sum(axis=1)          # the 8 smallest weights are pruned
      Array([0, 0, 4, 4], dtype=int32)
      >>> grads = {"dense": {"kernel": jnp.ones((4, 4))}}
      >>> updates, state = tx.update(grads, state, params)
      >>> int((optax.apply_updates(params, updates)["dense"]["kernel"] == 0).sum())
      8
    """
    updater = magnitude() if updater is None else updater
    schedule = OneShot(0) if schedule is None else schedule
    inner = optax.with_extra_args_support(inner)
    resolved = dict(targets)

    def init_fn(params: Tree) -> SparseState:
        _check(resolved, params, updater, schedule)
        leaves = named_leaves(params)
        scale = schedule.scale(jnp.int32(0))
        masks = {
            path: updater.init_mask(leaves[path], pattern, scale, _key(seed, 0, 0, i))
            for i, (path, pattern) in enumerate(resolved.items())
        }
        return SparseState(masks, inner.init(params), jnp.zeros([], jnp.int32))

    def recompute(masks, params, grads, step):
        leaves, grad_leaves = named_leaves(params), named_leaves(grads)
        scale = schedule.scale(step)
        return {
            path: updater.update_mask(
                masks[path],
                leaves[path],
                grad_leaves[path],
                pattern,
                scale,
                _key(seed, 1, step, i),
                step,
            )
            for i, (path, pattern) in enumerate(resolved.items())
        }

    def update_fn(updates: Tree, state: SparseState, params: Tree | None = None, **extra):
        if params is None:
            raise ValueError("sparse_training needs the params: tx.update(grads, state, params)")
        step = state.count
        masks = lax.cond(
            schedule.is_update(step),
            lambda m: recompute(m, params, updates, step),
            lambda m: dict(m),
            state.masks,
        )
        inner_state = state.inner
        if updater.regrow:
            inner_state = _reset_activated(inner, inner_state, params, state.masks, masks)
        if not updater.dense_weights:
            updates = map_masked(
                lambda g, m: g if m is None else jnp.where(m, g, 0), updates, masks
            )
        new, inner_state = inner.update(updates, inner_state, params, **extra)
        if not updater.dense_weights:
            new = map_masked(
                lambda u, m, p: u if m is None else jnp.where(m, u, -p.astype(u.dtype)),
                new,
                masks,
                params,
            )
        return new, SparseState(masks, inner_state, optax.safe_int32_increment(step))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _reset_activated(inner, inner_state, params, old, new):
    """Zeroes the inner state's params-shaped entries wherever a mask went from off to on."""
    activated = {path: new[path] & ~old[path] for path in new}
    flags = map_masked(
        lambda p, m: jnp.zeros(jnp.shape(p), bool) if m is None else m, params, activated
    )

    def reset(value, flag):
        if not hasattr(value, "shape") or value.shape != flag.shape:
            return value
        return jnp.where(flag, jnp.zeros_like(value), value)

    return optax.tree_utils.tree_map_params(inner, reset, inner_state, flags)


def _sparse_state(opt_state: Any) -> SparseState:
    found = [
        s
        for s in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: isinstance(x, SparseState))
        if isinstance(s, SparseState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"expected one SparseState in the optimizer state, found {len(found)}; pass the state "
            "of a sparse_training transformation"
        )
    return found[0]


def masks_of(opt_state: Any) -> dict[str, jax.Array]:
    """The current ``{path: keep}`` masks held in ``opt_state`` (anywhere inside it)."""
    return dict(_sparse_state(opt_state).masks)


def forward_params(params: Tree, opt_state: Any) -> Tree:
    """The params the model should run with: masked in value, straight-through in gradient.

    Pruned entries read ``0`` and every entry receives the gradient taken at the masked point.
    Weights held at zero (every updater but STE) pass through unchanged, so calling this is
    always safe.
    """
    masks = masks_of(opt_state)
    return map_masked(
        lambda p, m: p if m is None else jnp.where(m, p, p - lax.stop_gradient(p)), params, masks
    )


def final_params(params: Tree, opt_state: Any) -> Tree:
    """``params`` with every pruned entry set to zero (what to save or evaluate after training)."""
    masks = masks_of(opt_state)
    return map_masked(lambda p, m: p if m is None else jnp.where(m, p, 0), params, masks)
