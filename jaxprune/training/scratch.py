"""Rethinking's baselines: train the pruned architecture from scratch instead of fine-tuning.

Liu et al. (ICLR 2019, "Rethinking the Value of Network Pruning") ask whether the weights a
pruned network inherits are worth keeping. Against prune-then-fine-tune they train the pruned
architecture from a fresh random initialisation:

- **Scratch-E**: for the same number of epochs as the large model was trained;
- **Scratch-B**: for the same computation budget: the epochs scaled by the ratio of the large
  model's FLOPs to the pruned one's (:func:`scratch_b_epochs`).

For structured pruning the pruned architecture is the physically smaller model
(:func:`jaxprune.structured.filters.shrink`), re-initialised with ``model.init(seed)``; for
unstructured pruning it is the dense model with the pruned entries' mask kept
(:func:`fresh_masked_init`, trained with :func:`jaxprune.training.keep_masks`) and its FLOPs
count only the non-zero weights (:meth:`jaxprune.models.vision.VisionModel.flops`).

The unstructured scratch model's initial scale follows the reference
(``cifar/weight-level/cifar_E.py``): every masked kernel is **redrawn** from ``N(0, 2/n)`` with
``n`` = its kept weights per input unit (Kaiming fan-out over the kept weights: for a convolution
``n = kept / c_in``, which is ``k·k·c_out`` when dense; for a linear or flattened head ``n = kept
/ inputs``), then masked. Drawing the dense init (LeCun: variance ``1/(k·k·c_in)``) and
masking it (``init="dense"``) starts a convolution at density ``d`` ``√(2·c_in/(c_out·d))``
times smaller (≈ 4.5 for ``c_in = c_out``, ``d = 0.1``), which handicaps scratch training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxprune.core.masks import apply_masks
from jaxprune.core.paths import flat_leaves, set_leaves
from jaxprune.models.vision import VisionModel
from jaxprune.training.masked import mask_lookup

INITS = ("reference", "dense")

__all__ = ["INITS", "fresh_masked_init", "kept_fan_out", "scratch_b_epochs"]


def scratch_b_epochs(
    epochs: int, flops_dense: int, flops_pruned: int, max_factor: float | None = None
) -> int:
    """Scratch-B's epochs: ``epochs · flops_dense / flops_pruned``, rounded up.

    Args:
      epochs: the large model's training epochs (Scratch-E's).
      flops_dense, flops_pruned: MACs per image of the large and the pruned model.
      max_factor: caps the scaling (the paper trains at most 2× longer on ImageNet); ``None``
        applies the full ratio.

    Raises:
      ValueError: non-positive FLOPs or epochs.
    """
    if epochs < 1 or flops_dense <= 0 or flops_pruned <= 0:
        raise ValueError(
            f"need epochs >= 1 and positive FLOPs, got {epochs}, {flops_dense}, {flops_pruned}"
        )
    factor = flops_dense / flops_pruned
    if max_factor is not None:
        factor = min(factor, max_factor)
    return max(epochs, math.ceil(round(epochs * factor, 6)))


def kept_fan_out(keep: np.ndarray) -> float:
    """``n`` of the reference's redraw: kept weights per input unit (a convolution's ``HWIO``
    kernel: per input channel; any other kernel: per entry of its leading axes)."""
    keep = np.asarray(keep, bool)
    inputs = keep.shape[-2] if keep.ndim == 4 else math.prod(keep.shape[:-1])
    return float(keep.sum()) / inputs


def fresh_masked_init(
    model: VisionModel, masks: Mapping[str, Any], seed: int, init: str = "reference"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(params, stats)`` freshly initialised from ``seed``, zero where ``masks`` prune.

    Args:
      model: the (dense-architecture) model.
      masks: ``{path: keep}`` or a params-like tree of keep-masks (``None`` where dense).
      seed: the new initialisation's seed.
      init: ``"reference"`` (default): every masked kernel redrawn from ``N(0, 2/n)``,
        ``n`` = :func:`kept_fan_out` (the module docstring); ``"dense"``: ``model.init(seed)``
        masked.

    Raises:
      ValueError: an unknown ``init``.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    params, stats = model.init(seed)
    lookup = mask_lookup(masks)
    if init == "reference":
        leaves = flat_leaves(params)
        key = jax.random.key(seed)
        redrawn = {}
        for i, (path, keep) in enumerate(sorted(lookup.items())):
            n = kept_fan_out(np.asarray(keep))
            std = math.sqrt(2.0 / n) if n > 0 else 0.0
            shape, dtype = leaves[path].shape, leaves[path].dtype
            redrawn[path] = (std * jax.random.normal(jax.random.fold_in(key, i), shape)).astype(
                dtype
            )
        params = set_leaves(params, redrawn)
    return apply_masks(params, lookup), stats
