"""Training-time pieces built on Optax: mask-keeping fine-tuning (and, as they land, sparse
training, LoRA recovery and gates)."""

from jaxprune.training.masked import KeepMasksState, keep_masks, mask_lookup

__all__ = ["KeepMasksState", "keep_masks", "mask_lookup"]
