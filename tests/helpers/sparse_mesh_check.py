"""Sparse training of a small MLP on one device and on 8-device meshes; prints the comparison.

Run by ``tests/training/test_sparse_mesh.py`` in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``. On a mesh the params (and with them the
masks and the optimizer state) are sharded: kernels' output axis over ``model``, the batch over
``data``; every step is one jitted loss-gradient-update. Each run is compared with the same run on
one device: mask entries that differ and the largest weight difference. The default run uses the
2x4 mesh; ``--all-meshes`` adds 1x8 (the slow test).
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxprune import sharding
from jaxprune.models.vision import MLPConfig, VisionModel
from jaxprune.training import (
    distributions,
    forward_params,
    masks_of,
    schedules,
    sparse_training,
    updaters,
)

MESHES = ((2, 4), (1, 8)) if "--all-meshes" in sys.argv else ((2, 4),)
MODEL = VisionModel(MLPConfig(hidden=(32, 16), image_size=8))
RUNS = {
    "gmp magnitude": (updaters.magnitude(), schedules.gmp(0, 6, 2)),
    "rigl": (updaters.rigl(0.3), schedules.Periodic(2)),
    "ste": (updaters.ste(), schedules.Periodic(1)),
}


def place(tree, mesh):
    """Kernels split over ``model`` on their output axis where it divides; the rest replicated."""

    def spec(x):
        if mesh is None:
            return jax.device_put(x, jax.devices()[0])
        split = x.ndim == 2 and x.shape[1] % mesh.shape[sharding.MODEL] == 0
        parts = P(None, sharding.MODEL) if split else P()
        return jax.device_put(x, NamedSharding(mesh, parts))

    return jax.tree.map(spec, tree)


def train(updater, schedule, mesh, steps=8):
    params, stats = MODEL.init(0)
    params = place(params, mesh)
    targets = distributions.erk(params, 0.8)
    tx = sparse_training(optax.adam(1e-2), targets, updater, schedule, seed=3)
    state = tx.init(params)
    rng = np.random.default_rng(0)

    @jax.jit
    def step(params, state, x, y):
        def loss(p):
            logits, _ = MODEL.apply(forward_params(p, state), stats, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        x = jnp.asarray(rng.normal(size=(16, 8, 8, 1)), jnp.float32)
        y = jnp.asarray(rng.integers(0, 10, 16), jnp.int32)
        if mesh is not None:
            x = jax.device_put(x, NamedSharding(mesh, P(sharding.DATA)))
            y = jax.device_put(y, NamedSharding(mesh, P(sharding.DATA)))
        params, state = step(params, state, x, y)
    return params, masks_of(state)


def main() -> None:
    assert jax.device_count() == 8, jax.devices()
    report = []
    for name, (updater, schedule) in RUNS.items():
        ref_params, ref_masks = train(updater, schedule, None)
        for shape in MESHES:
            params, masks = train(updater, schedule, sharding.make_mesh(shape))
            kernel = params["layers"][0]["kernel"]
            report.append(
                {
                    "run": name,
                    "mesh": list(shape),
                    "kernel_spec": str(kernel.sharding.spec),
                    "devices": len(kernel.sharding.device_set),
                    "pruned": int(sum(int(np.sum(~np.asarray(m))) for m in masks.values())),
                    "mask_mismatches": int(
                        sum(
                            int(np.sum(np.asarray(masks[p]) != np.asarray(ref_masks[p])))
                            for p in ref_masks
                        )
                    ),
                    "max_weight_diff": float(
                        max(
                            np.max(np.abs(np.asarray(a) - np.asarray(b)))
                            for a, b in zip(
                                jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True
                            )
                        )
                    ),
                }
            )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
