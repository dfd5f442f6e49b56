"""A whole federated run: FedTiny or a baseline, with accuracy and cost per round.

::

    data = ImageData.load("mnist")
    clients = dirichlet_split(data.train.labels, 100, alpha=0.5, seed=0)
    model = VisionModel(VGGConfig(widths=(8, "M", 16, "M", 32)))
    result = federated_train(model, data.train, clients, FedConfig(rounds=50), method="fedtiny",
                             density=0.1, eval_set=data.test)
    result.history[-1]      # round, test_accuracy, bytes_down, bytes_up, client_peak_bytes, ...

Methods: ``"dense"`` (FedAvg), ``"magnitude"`` (one-shot magnitude pruning of the initial weights,
mask fixed), ``"random"`` (a fixed random mask), ``"fedtiny"``. Sparse baselines use ERK per-layer
densities; every sparse method trains its clients through :func:`jaxprune.training.keep_masks`.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprune.federated.accounting as accounting
import jaxprune.federated.fedtiny as fedtiny
from jaxprune.core.config import ConfigIO
from jaxprune.core.deprecation import renamed
from jaxprune.core.paths import flat_leaves, set_leaves
from jaxprune.federated.fedavg import make_round, place_clients
from jaxprune.federated.splits import batch_plan, max_steps, sample_clients
from jaxprune.models.vision import VisionModel
from jaxprune.training.loop import Split, evaluate

__all__ = ["FEDERATED_METHODS", "FedConfig", "FedResult", "federated_train"]

FEDERATED_METHODS = ("dense", "magnitude", "random", "fedtiny")


@dataclasses.dataclass(frozen=True)
class FedConfig(ConfigIO):
    """FedAvg's settings: ``rounds``, ``clients_per_round``, ``local_epochs``, ``batch_size``,
    the client SGD's ``learning_rate`` and ``momentum``, ``seed`` (model, masks, sampling,
    batches), ``eval_every`` rounds (the last round is always evaluated) and ``client_loop``:
    ``"vmap"`` (clients as a batched, shardable axis) or ``"map"`` (one after another; faster on
    a CPU)."""

    rounds: int = 50
    clients_per_round: int = 10
    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.05
    momentum: float = 0.0
    seed: int = 0
    eval_every: int = 5
    client_loop: str = "vmap"

    NAME = "federated config"

    def __post_init__(self):
        if self.client_loop not in ("vmap", "map"):
            raise ValueError(f"client_loop must be 'vmap' or 'map', got {self.client_loop!r}")
        if min(self.rounds, self.clients_per_round, self.local_epochs, self.batch_size) < 1:
            raise ValueError(f"rounds, clients, epochs and batch size must be >= 1: {self}")


def _accept_old_lr(init):
    # ``lr`` was the old name of ``learning_rate``: accepted (and read) with a warning for a while.
    @functools.wraps(init)
    def __init__(self, *args, lr: float | None = None, **kwargs):
        if lr is not None:
            warnings.warn("FedConfig(lr=) is deprecated; use learning_rate=", DeprecationWarning, 2)
            kwargs["learning_rate"] = lr
        init(self, *args, **kwargs)

    return __init__


def _old_lr(config: FedConfig) -> float:
    warnings.warn("FedConfig.lr is deprecated; use learning_rate", DeprecationWarning, 2)
    return config.learning_rate


FedConfig.__init__ = _accept_old_lr(FedConfig.__init__)
FedConfig.lr = property(_old_lr)


@dataclasses.dataclass(frozen=True)
class FedResult:
    """``params``, ``stats``, ``masks`` (``{}`` if dense) at the end; ``history``: one dict per
    round; ``selection``: FedTiny's candidates (name, loss) and the winner, else ``None``;
    ``config``: what ran (``method``, ``density``, ``federated``: the :class:`FedConfig`'s
    dict, ``fedtiny``: the :class:`~jaxprune.federated.FedTinyConfig`'s or ``None``), JSON-able
    like a pruned checkpoint's ``recipe.json``."""

    params: Any
    stats: Any
    masks: dict[str, jax.Array]
    history: list[dict[str, Any]]
    selection: dict[str, Any] | None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)


@functools.lru_cache(maxsize=16)
def _round_fn(model: VisionModel, lr: float, momentum: float, client_loop: str):
    # One compiled round per model and optimizer, shared by every run of a sweep.
    return make_round(model, optax.sgd(lr, momentum=momentum or None), client_loop)


def _density(masks: dict[str, jax.Array]) -> float:
    kept = sum(int(jnp.sum(m)) for m in masks.values())
    return kept / max(sum(int(m.size) for m in masks.values()), 1)


def _plan(clients, config: FedConfig, t: int, length: int):
    chosen = sample_clients(len(clients), config.clients_per_round, config.seed, t)
    batches, steps = batch_plan(
        clients,
        chosen,
        local_epochs=config.local_epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        round_index=t,
        length=length,
    )
    return chosen, batches, steps


def _warm_up(round_fn, train_set, clients, config, tiny, length):
    """``(params, stats, masks) -> (params, stats, bytes)``: rounds ``1 … warmup_rounds`` of
    sparse FedAvg (the same clients and batches for every candidate)."""
    images, labels = jnp.asarray(train_set.images), jnp.asarray(train_set.labels)
    counts = np.asarray([len(c) for c in clients], np.float32)

    def warm_up(params, stats, masks):
        down = up = 0
        for t in range(1, tiny.warmup_rounds + 1):
            chosen, batches, steps = _plan(clients, config, t, length)
            down += len(chosen) * accounting.model_bytes(params, masks, stats)
            b, s, w = place_clients(batches, steps, counts[chosen])
            params, stats, _ = round_fn(params, stats, masks, images, labels, b, s, w)
            up += len(chosen) * accounting.model_bytes(params, masks, stats)
        return params, stats, {"down": down, "up": up}

    return warm_up


def _start(model, params, stats, method, density, train_set, clients, config, tiny, warm_up):
    """The initial masks, params and stats of ``method``, and the selection's record/bytes."""
    if method == "dense":
        return {}, params, stats, None, {"down": 0, "up": 0}
    if method in ("magnitude", "random"):
        masks = fedtiny.initial_masks(params, density, "erk", method, seed=config.seed)
        return masks, fedtiny.apply(params, masks), stats, None, {"down": 0, "up": 0}
    chosen = sample_clients(len(clients), config.clients_per_round, config.seed, 0)
    data = [(train_set.images[clients[k]], train_set.labels[clients[k]]) for k in chosen]
    winner, cands, cost = fedtiny.select_candidate(
        model, params, stats, density, tiny, data, seed=config.seed,
        warm_up=warm_up if tiny.warmup_rounds else None,
    )  # fmt: skip
    record = {"winner": winner.name, "losses": {c.name: c.loss for c in cands}}
    return winner.masks, winner.params, winner.stats, record, cost


def _adjust(model, params, sent, stats, masks, train_set, batches, steps, weights, t, tiny):
    """FedTiny's prune-and-grow after round ``t``; returns params, masks and swap counts."""
    k = {p: fedtiny.swap_count(tiny.alpha, t, tiny.end, int(jnp.sum(m))) for p, m in masks.items()}
    w = np.asarray(weights, np.float64) / np.sum(weights)
    aggregated = {p: jnp.zeros(m.shape, jnp.float32) for p, m in masks.items()}
    for row in range(len(batches)):
        rows = [j % int(steps[row]) for j in range(tiny.grad_batches)]
        index = batches[row, rows]
        grads = fedtiny.client_gradient(
            model, sent, stats, train_set.images[index], train_set.labels[index]
        )
        leaves = {p: g for p, g in flat_leaves(grads).items() if p in masks}
        for p, m in masks.items():
            aggregated[p] += float(w[row]) * fedtiny.client_topk(leaves[p], m, k[p])
    flat, new_masks, updates = flat_leaves(params), {}, {}
    for p, m in masks.items():
        updates[p], new_masks[p] = fedtiny.prune_and_grow(flat[p], m, aggregated[p], k[p])
    return set_leaves(params, updates), new_masks, k


def federated_train(
    model: VisionModel,
    train_set: Split,
    clients: Sequence[np.ndarray],
    config: FedConfig,
    method: str = "dense",
    density: float = 1.0,
    *,
    fedtiny_config: fedtiny.FedTinyConfig | None = None,
    eval_set: Split | None = None,
    params: Any = None,
    stats: Any = None,
) -> FedResult:
    """Runs ``config.rounds`` FedAvg rounds of ``method`` at ``density`` (see the module doc).

    Args:
      model: a vision model.
      train_set: the training split; ``clients`` index into it.
      clients: each client's example indices (:func:`~jaxprune.federated.dirichlet_split`).
      config: rounds, sampling, local training.
      method: one of :data:`FEDERATED_METHODS`.
      density: kept fraction of the kernels (ignored for ``"dense"``).
      fedtiny_config: FedTiny's settings (default :class:`~jaxprune.federated.FedTinyConfig`).
      eval_set: test split for ``test_accuracy`` every ``config.eval_every`` rounds.
      params, stats: the initial model (default ``model.init(config.seed)``).

    Returns:
      A :class:`FedResult`.
    """
    if method not in FEDERATED_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {FEDERATED_METHODS}")
    if method != "dense" and not 0.0 < density < 1.0:
        raise ValueError(f"a sparse method needs a density in (0, 1), got {density}")
    tiny = fedtiny_config or fedtiny.FedTinyConfig()
    warmup = tiny.warmup_rounds if method == "fedtiny" else 0
    if warmup >= config.rounds:
        raise ValueError(f"warmup_rounds {warmup} leaves none of the {config.rounds} rounds")
    if params is None:
        params, stats = model.init(config.seed)
    length = max_steps(clients, config.local_epochs, config.batch_size)
    round_fn = _round_fn(model, config.learning_rate, config.momentum, config.client_loop)
    warm_up = _warm_up(round_fn, train_set, clients, config, tiny, length)
    masks, params, stats, selection, first = _start(
        model, params, stats, method, density, train_set, clients, config, tiny, warm_up
    )
    images, labels = jnp.asarray(train_set.images), jnp.asarray(train_set.labels)
    counts = np.asarray([len(c) for c in clients], np.float32)
    slots = 1 if config.momentum else 0
    history = []
    # The winner's warm-up rounds are rounds 1 … warmup of its run (their bytes in ``first``).
    for t in range(warmup + 1, config.rounds + 1):
        chosen, batches, steps = _plan(clients, config, t, length)
        sent, sent_stats, message = params, stats, accounting.model_bytes(params, masks, stats)
        b, s, w = place_clients(batches, steps, counts[chosen])
        params, stats, losses = round_fn(params, stats, masks, images, labels, b, s, w)
        record = {
            "round": t,
            "train_loss": float(np.average(np.asarray(losses), weights=counts[chosen])),
            "bytes_down": len(chosen) * message + (first["down"] if t == warmup + 1 else 0),
            "bytes_up": len(chosen) * accounting.model_bytes(params, masks, stats)
            + (first["up"] if t == warmup + 1 else 0),
            "client_peak_bytes": accounting.client_peak_bytes(params, masks or None, slots),
        }
        if method == "fedtiny" and tiny.adjusts(t):
            params, masks, k = _adjust(
                model,
                params,
                sent,
                sent_stats,
                masks,
                train_set,
                batches,
                steps,
                counts[chosen],
                t,
                tiny,
            )
            record["bytes_up"] += len(chosen) * accounting.topk_bytes(k)
            record["client_peak_bytes"] = accounting.client_peak_bytes(
                params, masks, slots, dense_block=True
            )
            record["swapped"] = int(sum(k.values()))
        record["density"] = _density(masks) if masks else 1.0
        if eval_set is not None and (t % config.eval_every == 0 or t == config.rounds):
            record["test_accuracy"] = evaluate(model, params, stats, eval_set)
        history.append(record)
    ran = {
        "method": method,
        "density": 1.0 if method == "dense" else density,
        "federated": config.to_dict(),
        "fedtiny": tiny.to_dict() if method == "fedtiny" else None,
    }
    return FedResult(params, stats, masks, history, selection, ran)


# Old names, kept for a while: each warns and gives the new one.
__getattr__ = renamed(__name__, {"METHODS": "FEDERATED_METHODS"})
