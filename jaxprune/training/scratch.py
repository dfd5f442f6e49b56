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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from jaxprune.core.masks import apply_masks
from jaxprune.models.vision import VisionModel
from jaxprune.training.masked import mask_lookup

__all__ = ["fresh_masked_init", "scratch_b_epochs"]


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


def fresh_masked_init(
    model: VisionModel, masks: Mapping[str, Any], seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(params, stats)`` freshly initialised from ``seed``, zero where ``masks`` prune.

    Args:
      model: the (dense-architecture) model.
      masks: ``{path: keep}`` or a params-like tree of keep-masks (``None`` where dense).
      seed: the new initialisation's seed.
    """
    params, stats = model.init(seed)
    return apply_masks(params, mask_lookup(masks)), stats
