"""Communication and client-memory accounting of a federated run (analytic, in bytes).

The simulation itself trains masked dense arrays (that is what ``vmap`` runs fast); these
functions count what a real deployment sends and holds when sparse tensors are stored as their
non-zero values plus a one-bit-per-entry keep-mask:

- a **model message** (server → client, or the trained model back) is every dense leaf in full,
  every masked leaf as ``nnz`` values and ``⌈size/8⌉`` mask bytes, and the BatchNorm statistics;
- a **top-k gradient message** is ``k`` values and ``k`` int32 indices per block;
- **client peak parameter memory** is the weights, their gradients and the optimizer's
  per-parameter slots in the same sparse format, plus, in a FedTiny adjustment round, the dense
  gradient of the largest single block (the clients compute growth gradients block by block).
  Activations and data are not counted: they are the same for every method at equal batch size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxprune.core.paths import named_leaves

__all__ = ["client_peak_bytes", "model_bytes", "topk_bytes"]


def _param_bytes(params: Any, masks: Mapping[str, jax.Array] | None, with_masks: bool) -> int:
    masks = masks or {}
    total = 0
    for path, x in named_leaves(params).items():
        itemsize = np.dtype(x.dtype).itemsize
        if path in masks:
            total += int(np.count_nonzero(np.asarray(masks[path]))) * itemsize
            total += math.ceil(x.size / 8) if with_masks else 0
        else:
            total += int(x.size) * itemsize
    return total


def model_bytes(params: Any, masks: Mapping[str, jax.Array] | None, stats: Any = None) -> int:
    """Bytes of one model message: params in the sparse format, plus ``stats`` in full."""
    stat_bytes = sum(int(x.size) * np.dtype(x.dtype).itemsize for x in named_leaves(stats).values())
    return _param_bytes(params, masks, with_masks=True) + (stat_bytes if stats is not None else 0)


def topk_bytes(counts: Mapping[str, int]) -> int:
    """Bytes of one client's growth message: ``k`` float32 values and int32 indices per block."""
    return sum(8 * int(k) for k in counts.values())


def client_peak_bytes(
    params: Any,
    masks: Mapping[str, jax.Array] | None,
    optimizer_slots: int = 0,
    dense_block: bool = False,
) -> int:
    """A client's peak parameter memory (see the module docstring).

    Args:
      params: the model (its shapes and dtypes).
      masks: ``{path: keep}`` or ``None`` (dense).
      optimizer_slots: per-parameter arrays of the optimizer (0 for SGD, 1 momentum, 2 Adam).
      dense_block: add the dense gradient of the largest masked leaf (FedTiny's growth step).
    """
    weights = _param_bytes(params, masks, with_masks=True)
    values = _param_bytes(params, masks, with_masks=False)
    peak = weights + values * (1 + optimizer_slots)
    if dense_block and masks:
        leaves = named_leaves(params)
        peak += max(int(leaves[p].size) * np.dtype(leaves[p].dtype).itemsize for p in masks)
    return peak
