"""Training-time pieces built on Optax: mask-keeping fine-tuning, LoRA adapters and the recovery
loop, sparse training (schedules, updaters, distributions), the vision training loop and
Rethinking's scratch baselines."""

from jaxprune.training import distributions, schedules, updaters
from jaxprune.training.lora import LoraConfig, init_lora, lora_logits, merge, unmerge
from jaxprune.training.masked import KeepMasksState, keep_masks, mask_lookup
from jaxprune.training.recover import RecoverConfig, RecoverResult, recover
from jaxprune.training.sparse import (
    SparseState,
    final_params,
    forward_params,
    masks_of,
    sparse_training,
)

__all__ = [
    "KeepMasksState",
    "LoraConfig",
    "RecoverConfig",
    "RecoverResult",
    "SparseState",
    "distributions",
    "final_params",
    "forward_params",
    "init_lora",
    "keep_masks",
    "lora_logits",
    "mask_lookup",
    "masks_of",
    "merge",
    "recover",
    "schedules",
    "sparse_training",
    "unmerge",
    "updaters",
]
