"""FedTiny (Huang et al. 2023): adaptive BatchNorm selection, then progressive prune-and-grow.

**Selection.** The server draws candidate sparse models at the target density (random keep-masks
with ERK or uniform per-layer densities, :mod:`jaxprune.training.distributions`) over the same
initial weights. With ``warmup_rounds`` each candidate is first trained that many FedAvg rounds by
the clients (sparse, its mask kept; the same clients and batches for every candidate), so the
selection compares trained candidates rather than initialisations whose losses are all ≈ ln C.
For each candidate the clients re-estimate the BatchNorm statistics; the server pools them exactly
(:func:`jaxprune.federated.bn.pooled_statistics`), the clients report their loss under the pooled
statistics, and the candidate with the lowest example-weighted loss wins (and keeps its warm-up).

**Progressive pruning.** Every ``every`` rounds until ``end`` (``ΔT`` and ``T_end``) each pruned
leaf (a block) swaps ``k_t = ⌊α/2·(1 + cos(πt/T_end))·n_active⌋`` entries: the server prunes the
``k_t`` smallest-magnitude active weights of the aggregated model and grows the ``k_t`` inactive
entries with the largest aggregated gradient magnitude. Each client sends only its own top-``k_t``
inactive entries (value and index); the server sums them weighted by the clients' example counts.
Grown weights start at 0, so the density is exactly the same before and after.

**Memory.** The paper's clients compute the growth gradient one block at a time, holding one dense
block gradient. This simulation does not: :func:`client_gradient` computes the full dense gradient
of every leaf in one backward pass. :mod:`jaxprune.federated.accounting` counts the paper's
deployment (analytic, one dense block); :func:`gradient_memory` measures what this simulation's
compiled gradient step actually holds (XLA's memory analysis), so the two can be compared.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.core.config import ConfigIO
from jaxprune.core.masks import apply_masks
from jaxprune.core.paths import named_leaves
from jaxprune.core.patterns import keep_mask
from jaxprune.core.select import smallest_mask
from jaxprune.core.sparsity import Unstructured
from jaxprune.federated.accounting import model_bytes
from jaxprune.federated.bn import pooled_statistics
from jaxprune.federated.fedavg import cross_entropy
from jaxprune.models.vision import VisionModel
from jaxprune.training import distributions

__all__ = [
    "Candidate",
    "FedTinyConfig",
    "client_topk",
    "gradient_memory",
    "initial_masks",
    "prune_and_grow",
    "select_candidate",
    "swap_count",
]

Masks = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class FedTinyConfig(ConfigIO):
    """FedTiny's settings.

    Attributes:
      candidates: how many candidate masks per distribution in ``distributions``.
      distributions: per-layer densities of the candidates: ``"erk"``, ``"uniform"``.
      alpha: the initial swap fraction ``α`` of prune-and-grow.
      every: rounds between adjustments (``ΔT``).
      end: the last round that adjusts (``T_end``).
      grad_batches: batches of its data each client averages the growth gradient over.
      warmup_rounds: FedAvg rounds each candidate trains before the selection (0: select at
        initialisation); the winner's count against the run's rounds.
    """

    candidates: int = 2
    distributions: tuple[str, ...] = ("erk", "uniform")
    alpha: float = 0.2
    every: int = 5
    end: int = 50
    grad_batches: int = 2
    warmup_rounds: int = 0

    NAME = "FedTiny config"

    def __post_init__(self):
        object.__setattr__(self, "distributions", tuple(self.distributions))
        unknown = set(self.distributions) - {"erk", "uniform"}
        if unknown or not self.distributions:
            raise ValueError(f"distributions must be 'erk'/'uniform', got {self.distributions}")
        if self.candidates < 1 or self.every < 1 or self.end < 0 or self.grad_batches < 1:
            raise ValueError(f"need candidates, every, grad_batches >= 1 and end >= 0: {self}")
        if self.warmup_rounds < 0:
            raise ValueError(f"warmup_rounds must be >= 0, got {self.warmup_rounds}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")

    def adjusts(self, round_index: int) -> bool:
        """Whether prune-and-grow runs after round ``round_index`` (``0 < t <= T_end``)."""
        return 0 < round_index <= self.end and round_index % self.every == 0


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A candidate's ``name`` (distribution and seed), ``masks``, pooled ``stats``, ``loss`` and
    ``params`` (after its warm-up, if any)."""

    name: str
    masks: Masks
    stats: Any
    loss: float
    params: Any = None


def targets(params: Any, density: float, distribution: str) -> dict[str, Unstructured]:
    """``{path: Unstructured}`` of the kernels at overall ``density`` (ERK or uniform)."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if distribution == "erk":
        return distributions.erk(params, 1.0 - density)
    if distribution == "uniform":
        return distributions.uniform(params, 1.0 - density)
    raise ValueError(f"unknown distribution {distribution!r}; use 'erk' or 'uniform'")


def initial_masks(
    params: Any, density: float, distribution: str, how: str = "random", seed: int = 0
) -> Masks:
    """Keep-masks at ``density``: ``how="random"`` (uniform scores) or ``"magnitude"`` (``|w|``)."""
    leaves = named_leaves(params)
    out = {}
    for i, (path, pattern) in enumerate(targets(params, density, distribution).items()):
        w = leaves[path]
        if how == "random":
            scores = jax.random.uniform(jax.random.fold_in(jax.random.PRNGKey(seed), i), w.shape)
        elif how == "magnitude":
            scores = jnp.abs(w).astype(jnp.float32)
        else:
            raise ValueError(f"unknown mask initialisation {how!r}; use 'random' or 'magnitude'")
        out[path] = keep_mask(scores, pattern)
    return out


def client_loss(model: VisionModel, params, stats, images, labels, batch_size: int = 512) -> float:
    """Summed cross-entropy of one client's data in inference mode (its report to the server)."""
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = jnp.asarray(images[start : start + batch_size])
        y = jnp.asarray(labels[start : start + batch_size])
        total += float(_eval_loss(model, params, stats, x, y))
    return total


@functools.partial(jax.jit, static_argnums=0)
def _eval_loss(model, params, stats, x, y):
    logits, _ = model.apply(params, stats, x)
    return jnp.sum(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])


def select_candidate(
    model: VisionModel,
    params,
    stats,
    density: float,
    config: FedTinyConfig,
    client_data: Sequence[tuple[np.ndarray, np.ndarray]],
    seed: int = 0,
    warm_up: Callable[[Any, Any, Masks], tuple[Any, Any, dict[str, int]]] | None = None,
) -> tuple[Candidate, list[Candidate], dict[str, int]]:
    """Adaptive BatchNorm selection over ``config``'s candidates (see the module docstring).

    Args:
      model, params, stats: the initial dense model.
      density: the target density of every candidate.
      config: the candidates' count and distributions.
      client_data: ``(images, labels)`` of each client taking part.
      seed: seeds the candidates' random masks.
      warm_up: ``(params, stats, masks) -> (params, stats, bytes)``, the candidates' training
        before they are compared (``config.warmup_rounds``; the caller runs the rounds).

    Returns:
      ``(winner, all candidates, bytes)``, bytes: ``{"down", "up"}`` summed over clients.
    """
    images = [x for x, _ in client_data]
    candidates, down, up = [], 0, 0
    for dist in config.distributions:
        for c in range(config.candidates):
            masks = initial_masks(params, density, dist, "random", seed=seed * 1000 + c)
            sparse, start = apply(params, masks), stats
            if warm_up is not None:
                sparse, start, cost = warm_up(sparse, stats, masks)
                down, up = down + cost["down"], up + cost["up"]
            pooled, sent = pooled_statistics(model, sparse, start, images)
            loss = sum(client_loss(model, sparse, pooled, x, y) for x, y in client_data)
            n = sum(len(y) for _, y in client_data)
            candidates.append(Candidate(f"{dist}/{c}", masks, pooled, loss / n, sparse))
            # The candidate goes down, then its pooled statistics layer by layer.
            down += len(client_data) * model_bytes(sparse, masks, pooled)
            up += sent + 4 * len(client_data)
    winner = min(candidates, key=lambda cand: cand.loss)
    return winner, candidates, {"down": down, "up": up}


def apply(params: Any, masks: Mapping[str, jax.Array]) -> Any:
    """``params`` zeroed where ``masks`` prune."""
    return apply_masks(params, dict(masks))


def swap_count(alpha: float, round_index: int, end: int, active: int) -> int:
    """``k_t = ⌊α/2·(1 + cos(πt/T_end))·n_active⌋`` (0 after ``T_end``)."""
    if round_index > end or end <= 0:
        return 0
    fraction = alpha / 2.0 * (1.0 + math.cos(math.pi * round_index / end))
    return int(math.floor(fraction * active))


def client_topk(grad: jax.Array, keep: jax.Array, k: int | jax.Array) -> jax.Array:
    """A client's message for one block: its gradient at the ``k`` inactive entries of largest
    magnitude, zero elsewhere (what it sends: ``k`` values and indices)."""
    score = jnp.where(keep, -jnp.inf, jnp.abs(grad).astype(jnp.float32))
    return jnp.where(smallest_mask(-score, k), grad, 0)


def prune_and_grow(
    weight: jax.Array, keep: jax.Array, aggregated: jax.Array, k: int | jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(weight, keep)`` after pruning the ``k`` smallest active ``|weight|`` and growing the
    ``k`` inactive entries of largest ``|aggregated|`` (grown weights are 0; pruned ones too).

    The number of active entries is unchanged whenever ``k <= min(active, inactive)``.
    """
    dropped = smallest_mask(jnp.where(keep, jnp.abs(weight).astype(jnp.float32), jnp.inf), k)
    kept = keep & ~dropped
    # Entries still active sort last, so only inactive ones (just-pruned ones included) can grow.
    grow_score = jnp.where(kept, -jnp.inf, jnp.abs(aggregated).astype(jnp.float32))
    new_keep = kept | smallest_mask(-grow_score, k)
    return jnp.where(new_keep & keep, weight, 0).astype(weight.dtype), new_keep


def client_gradient(model: VisionModel, params, stats, images, labels) -> Any:
    """The mean gradient of the training-mode loss over a client's batches ``(b, B, ...)``:
    every leaf's dense gradient at once (not block by block; see the module docstring)."""
    return _client_gradient(model, params, stats, jnp.asarray(images), jnp.asarray(labels))


def gradient_memory(model: VisionModel, params, stats, images, labels) -> dict[str, int]:
    """XLA's memory analysis of :func:`client_gradient`'s compiled step for these shapes:
    ``{"arguments", "outputs", "temporaries", "peak"}`` bytes, ``peak`` their sum (an upper
    bound on what the step holds at once; the analysis does not give the live maximum)."""
    compiled = _client_gradient.lower(
        model, params, stats, jnp.asarray(images), jnp.asarray(labels)
    ).compile()
    m = compiled.memory_analysis()
    out = {
        "arguments": int(m.argument_size_in_bytes),
        "outputs": int(m.output_size_in_bytes),
        "temporaries": int(m.temp_size_in_bytes),
    }
    return {**out, "peak": sum(out.values())}


@functools.partial(jax.jit, static_argnums=0)
def _client_gradient(model, params, stats, images, labels):
    grad = jax.grad(lambda p, x, y: cross_entropy(model, p, stats, x, y)[0])
    grads = jax.lax.map(lambda xy: grad(params, *xy), (images, labels))
    return jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=0), grads)
