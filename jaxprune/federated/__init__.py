"""Federated pruning, simulated with JAX: clients as a ``vmap``-ed leading axis, FedAvg, and
FedTiny (adaptive BatchNorm selection, progressive prune-and-grow) with its baselines.

::

    from jaxprune import federated as fl

    clients = fl.dirichlet_split(train.labels, num_clients=100, alpha=0.1, seed=0)
    result = fl.federated_train(model, train, clients, fl.FedConfig(rounds=30),
                                method="fedtiny", density=0.05, eval_set=test)

Modules: :mod:`~jaxprune.federated.splits` (Dirichlet splits, client sampling, batch plans),
:mod:`~jaxprune.federated.fedavg` (vmapped local training, weighted aggregation),
:mod:`~jaxprune.federated.bn` (BatchNorm statistics pooled exactly),
:mod:`~jaxprune.federated.fedtiny` (candidate selection, prune-and-grow),
:mod:`~jaxprune.federated.accounting` (bytes sent, client memory),
:mod:`~jaxprune.federated.run` (whole runs of FedTiny and the baselines).
"""

from jaxprune.core.deprecation import renamed
from jaxprune.federated import accounting, bn, fedavg, fedtiny, splits
from jaxprune.federated.bn import BatchNormMoments, pool, pooled_statistics
from jaxprune.federated.fedavg import local_train, make_round, weighted_mean
from jaxprune.federated.fedtiny import (
    FedTinyConfig,
    client_topk,
    initial_masks,
    prune_and_grow,
    select_candidate,
    swap_count,
)
from jaxprune.federated.run import FEDERATED_METHODS, FedConfig, FedResult, federated_train
from jaxprune.federated.splits import batch_plan, dirichlet_split, sample_clients

__all__ = [
    "FEDERATED_METHODS",
    "FedConfig",
    "FedResult",
    "FedTinyConfig",
    "BatchNormMoments",
    "accounting",
    "batch_plan",
    "bn",
    "client_topk",
    "dirichlet_split",
    "fedavg",
    "federated_train",
    "fedtiny",
    "initial_masks",
    "local_train",
    "make_round",
    "pool",
    "pooled_statistics",
    "prune_and_grow",
    "sample_clients",
    "select_candidate",
    "splits",
    "swap_count",
    "weighted_mean",
]

# Old names, kept for a while: each warns and gives the new one.
__getattr__ = renamed(__name__, {"METHODS": "FEDERATED_METHODS", "Moments": "BatchNormMoments"})
