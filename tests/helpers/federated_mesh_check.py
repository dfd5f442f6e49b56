"""A short FedAvg run with the client axis sharded over 2 CPU devices, and the same run with every
client on one device; prints the comparison as JSON.

Run by ``tests/federated/test_mesh.py`` with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from jaxprune.federated import FedConfig, fedavg, federated_train
from jaxprune.models.vision import VGGConfig, VisionModel
from jaxprune.training.loop import Split


def main() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 32).astype(np.int32)
    images = rng.normal(size=(96, 8, 8, 1)).astype(np.float32) + labels[:, None, None, None]
    data = Split(images, labels)
    model = VisionModel(VGGConfig(widths=(4, "M", 6), image_size=8, num_classes=3))
    clients = [np.arange(0, 40), np.arange(40, 70), np.arange(70, 96)]
    config = FedConfig(rounds=2, clients_per_round=2, batch_size=8, seed=0, eval_every=1)
    sharding = fedavg.client_sharding(2)
    placed = fedavg.place_clients(np.zeros((2, 3), np.int32))[0]
    sharded = federated_train(model, data, clients, config, "random", 0.5, eval_set=data)
    fedavg.client_sharding = lambda n: None
    single = federated_train(model, data, clients, config, "random", 0.5, eval_set=data)
    diff = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(
            jax.tree_util.tree_leaves(sharded.params),
            jax.tree_util.tree_leaves(single.params),
            strict=True,
        )
    )
    report = {
        "devices": jax.device_count(),
        "spec": str(sharding.spec) if sharding is not None else None,
        "placed_devices": len(placed.sharding.device_set),
        "max_param_diff": diff,
        "accuracy": [h["test_accuracy"] for h in sharded.history],
        "accuracy_single": [h["test_accuracy"] for h in single.history],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
