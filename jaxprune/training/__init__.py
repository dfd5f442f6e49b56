"""Training-time pieces built on Optax: mask-keeping fine-tuning, sparse training (schedules,
updaters, distributions), the vision training loop and Rethinking's scratch baselines."""

from jaxprune.training import distributions, schedules, updaters
from jaxprune.training.masked import KeepMasksState, keep_masks, mask_lookup
from jaxprune.training.sparse import (
    SparseState,
    final_params,
    forward_params,
    masks_of,
    sparse_training,
)

__all__ = [
    "KeepMasksState",
    "SparseState",
    "distributions",
    "final_params",
    "forward_params",
    "keep_masks",
    "mask_lookup",
    "masks_of",
    "schedules",
    "sparse_training",
    "updaters",
]
