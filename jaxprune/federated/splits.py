"""Non-IID client splits and the per-round batch plans of a federated simulation.

``dirichlet_split(labels, num_clients, alpha, seed)`` gives each client the indices of its examples:
for every class, proportions over the clients are drawn from ``Dirichlet(alpha · 1)`` and the
class's (shuffled) examples are cut at those proportions (Hsu et al. 2019; the split FedTiny and
most FedAvg studies use). Small ``alpha`` (0.1) gives clients one or two classes; large ``alpha``
tends to IID. Redrawn until every client holds at least ``min_size`` examples.

``batch_plan`` turns the clients sampled in a round into one ``(clients, steps, batch)`` array of
global example indices plus each client's step count, so every client can run in one ``vmap``:
client ``k`` takes ``local_epochs · ⌈n_k / B⌉`` steps over a stream of fresh permutations of its
examples (every batch is full; a client with fewer than ``B`` examples repeats some); rows past a
client's count are padding its loop never reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["batch_plan", "dirichlet_split", "label_histogram", "max_steps", "sample_clients"]


def dirichlet_split(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int = 0, min_size: int = 1
) -> list[np.ndarray]:
    """Indices of each client's examples: a ``Dirichlet(alpha)`` share of every class.

    Args:
      labels: ``(n,)`` integer class labels.
      num_clients: how many clients.
      alpha: the Dirichlet concentration (> 0); smaller is more skewed.
      seed: the draw is deterministic in it.
      min_size: redraw until every client has at least this many examples.

    Returns:
      ``num_clients`` sorted ``int64`` index arrays, disjoint, covering every example once.

    Raises:
      ValueError: ``alpha <= 0``, fewer examples than ``num_clients · min_size``.
    """
    labels = np.asarray(labels)
    if alpha <= 0 or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a positive number, got {alpha}")
    if num_clients < 1 or len(labels) < num_clients * min_size:
        raise ValueError(
            f"{len(labels)} examples cannot give {num_clients} clients {min_size} each; "
            "use fewer clients or a smaller min_size"
        )
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in np.unique(labels):
            index = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * len(index)).astype(np.int64)
            for k, piece in enumerate(np.split(index, cuts)):
                parts[k].append(piece)
        clients = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(c) for c in clients) >= min_size:
            return clients
    raise ValueError(
        f"no Dirichlet({alpha}) split in 1000 draws gave every client {min_size} examples; "
        "lower min_size or raise alpha"
    )


def label_histogram(labels: np.ndarray, clients: Sequence[np.ndarray], num_classes: int):
    """``(clients, classes)`` counts of each client's labels (to see how skewed a split is)."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[c], minlength=num_classes) for c in clients])


def sample_clients(num_clients: int, per_round: int, seed: int, round_index: int) -> np.ndarray:
    """The sorted clients taking part in a round: ``per_round`` drawn without replacement."""
    if not 1 <= per_round <= num_clients:
        raise ValueError(f"per_round must be in [1, {num_clients}], got {per_round}")
    rng = np.random.default_rng([seed, round_index, 1])
    return np.sort(rng.choice(num_clients, size=per_round, replace=False))


def _steps(n: int, local_epochs: int, batch_size: int) -> int:
    return local_epochs * math.ceil(n / batch_size)


def max_steps(clients: Sequence[np.ndarray], local_epochs: int, batch_size: int) -> int:
    """The most local steps any client takes in a round (the plan's static length)."""
    return max(_steps(len(c), local_epochs, batch_size) for c in clients)


def batch_plan(
    clients: Sequence[np.ndarray],
    chosen: Sequence[int],
    *,
    local_epochs: int,
    batch_size: int,
    seed: int,
    round_index: int,
    length: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(batches, steps)`` of the ``chosen`` clients for one round (see the module docstring).

    Args:
      clients: every client's example indices (from :func:`dirichlet_split`).
      chosen: the clients of this round.
      local_epochs, batch_size: each chosen client runs ``local_epochs · ⌈n_k/B⌉`` steps.
      seed, round_index: the permutations are drawn from ``(seed, round, client, epoch)``.
      length: rows of the plan (``>=`` :func:`max_steps` of all clients; one compiled shape).

    Returns:
      ``batches``: ``int32 (len(chosen), length, batch_size)`` global indices;
      ``steps``: ``int32 (len(chosen),)`` steps each client takes.
    """
    batches = np.zeros((len(chosen), length, batch_size), np.int32)
    steps = np.zeros(len(chosen), np.int32)
    for row, k in enumerate(chosen):
        own = np.asarray(clients[k])
        n_steps = _steps(len(own), local_epochs, batch_size)
        if n_steps > length:
            raise ValueError(f"client {k} takes {n_steps} steps, the plan has {length} rows")
        stream, epoch = [], 0
        while sum(len(s) for s in stream) < n_steps * batch_size:
            rng = np.random.default_rng([seed, round_index, int(k), epoch])
            stream.append(own[rng.permutation(len(own))])
            epoch += 1
        flat = np.concatenate(stream)[: n_steps * batch_size]
        batches[row, :n_steps] = flat.reshape(n_steps, batch_size)
        steps[row] = n_steps
    return batches, steps
