"""Training-time pieces built on Optax: mask-keeping fine-tuning, LoRA adapters and the recovery
loop that uses them (and, as they land, sparse training and gates)."""

from jaxprune.training.lora import LoraConfig, init_lora, lora_logits, merge, unmerge
from jaxprune.training.masked import KeepMasksState, keep_masks, mask_lookup
from jaxprune.training.recover import RecoverConfig, RecoverResult, recover

__all__ = [
    "KeepMasksState",
    "LoraConfig",
    "RecoverConfig",
    "RecoverResult",
    "init_lora",
    "keep_masks",
    "lora_logits",
    "mask_lookup",
    "merge",
    "recover",
    "unmerge",
]
