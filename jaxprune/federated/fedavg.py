"""FedAvg with the clients as a leading axis: one ``vmap`` runs every client of a round.

A round (McMahan et al. 2017): the server sends the global params and BatchNorm statistics to the
sampled clients; each runs ``local_epochs`` of its own optimizer from a fresh state (Optax, wrapped
in :func:`jaxprune.training.keep_masks` when the model is sparse, so pruned entries stay exactly
zero); the server replaces the global model by the mean of the clients' params and statistics,
weighted by their example counts.

All sampled clients run in one compiled program: the client axis is ``vmap``-ed, each client's
``lax.while_loop`` stops at its own step count (``vmap`` keeps the finished ones unchanged), and the
images stay on the device once, gathered by the round's batch plan
(:func:`jaxprune.federated.splits.batch_plan`). With several devices the client axis is sharded
over them (:func:`client_sharding`); on one device nothing changes. ``client_loop="map"`` runs
the clients one after another inside the same program instead (faster on a CPU; same numbers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprune.models.vision import VisionModel
from jaxprune.training.masked import keep_masks

__all__ = ["client_sharding", "local_train", "make_round", "weighted_mean"]

Tree = Any


def weighted_mean(trees: Tree, weights: jax.Array) -> Tree:
    """``Σ_k w_k·x_k / Σ_k w_k`` of client-stacked leaves (leading axis = clients), in float32.

    The weights are normalised first, so one client with any weight returns its own leaves
    exactly.
    """
    w = jnp.asarray(weights, jnp.float32)
    w = w / jnp.sum(w)

    def mean(x):
        return jnp.tensordot(w, x.astype(jnp.float32), axes=1).astype(x.dtype)

    return jax.tree_util.tree_map(mean, trees)


def cross_entropy(model: VisionModel, params, stats, x, y) -> tuple[jax.Array, Tree]:
    """Mean softmax cross-entropy of a training-mode batch, and the new BatchNorm statistics."""
    logits, new_stats = model.apply(params, stats, x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_stats


def local_train(
    model: VisionModel,
    inner: optax.GradientTransformation,
    params: Tree,
    stats: Tree,
    masks: Mapping[str, jax.Array] | None,
    images: jax.Array,
    labels: jax.Array,
    batches: jax.Array,
    steps: jax.Array,
) -> tuple[Tree, Tree, jax.Array]:
    """One client's local training: ``steps`` optimizer steps over ``batches`` rows.

    Args:
      model: the vision model.
      inner: the client optimizer (a fresh state every round).
      params, stats: the global model the server sent.
      masks: ``{path: keep}`` (the model stays on them) or ``None`` (dense).
      images, labels: the whole training set (indexed by ``batches``).
      batches: ``(rows, B)`` global indices; rows ``>= steps`` are not read.
      steps: how many rows to train on (a traced scalar).

    Returns:
      ``(params, stats, mean loss)`` after the last step.
    """
    tx = inner if not masks else keep_masks(inner, masks)
    grad_fn = jax.value_and_grad(lambda p, s, x, y: cross_entropy(model, p, s, x, y), has_aux=True)

    def body(carry):
        i, p, s, opt, total = carry
        index = batches[i]
        (loss, s), grads = grad_fn(p, s, images[index], labels[index])
        updates, opt = tx.update(grads, opt, p)
        return i + 1, optax.apply_updates(p, updates), s, opt, total + loss

    start = (jnp.int32(0), params, stats, tx.init(params), jnp.float32(0))
    _, params, stats, _, total = lax.while_loop(lambda c: c[0] < steps, body, start)
    return params, stats, total / jnp.maximum(steps, 1).astype(jnp.float32)


def client_sharding(num_clients: int) -> NamedSharding | None:
    """A sharding of a client-stacked array over all devices, or ``None`` on one device (or when
    the clients do not divide evenly over the devices)."""
    devices = jax.devices()
    if len(devices) < 2 or num_clients % len(devices):
        return None
    return NamedSharding(Mesh(np.asarray(devices), ("clients",)), PartitionSpec("clients"))


def make_round(model: VisionModel, inner: optax.GradientTransformation, client_loop: str = "vmap"):
    """A jitted FedAvg round ``(params, stats, masks, images, labels, batches, steps, weights)
    -> (params, stats, client losses)``.

    ``batches`` ``(clients, rows, B)`` and ``steps``/``weights`` ``(clients,)`` stack the sampled
    clients; ``weights`` are their example counts. ``masks`` is ``{path: keep}`` or ``{}``.
    ``client_loop="vmap"`` runs the clients as a batched axis (sharded over devices; the choice for
    accelerators); ``"map"`` runs them one after another with ``lax.map`` in the same program, the
    same numbers to rounding and several times faster on a CPU, where the vmapped convolutions
    with per-client kernels become slow grouped convolutions.
    """

    def one(params, stats, masks, images, labels, batches, steps):
        return local_train(model, inner, params, stats, masks, images, labels, batches, steps)

    if client_loop == "vmap":
        clients = jax.vmap(one, in_axes=(None, None, None, None, None, 0, 0))
    elif client_loop == "map":

        def clients(params, stats, masks, images, labels, batches, steps):
            run = lambda bs: one(params, stats, masks, images, labels, *bs)
            return lax.map(run, (batches, steps))

    else:
        raise ValueError(f"client_loop must be 'vmap' or 'map', got {client_loop!r}")

    @jax.jit
    def round_fn(params, stats, masks, images, labels, batches, steps, weights):
        new_params, new_stats, losses = clients(
            params, stats, masks, images, labels, batches, steps
        )
        return weighted_mean(new_params, weights), weighted_mean(new_stats, weights), losses

    return round_fn


def place_clients(*arrays: np.ndarray) -> tuple[jax.Array, ...]:
    """Client-stacked host arrays on the device(s): sharded along the clients when possible."""
    sharding = client_sharding(len(arrays[0]))
    if sharding is None:
        return tuple(jnp.asarray(a) for a in arrays)
    return tuple(jax.device_put(a, sharding) for a in arrays)
