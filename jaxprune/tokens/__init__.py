"""Deprecated: the old name of :mod:`jaxprune.token_pruning` (ViT token pruning).

Every name resolves to the new package's, with a ``DeprecationWarning``.
"""

from jaxprune.core.deprecation import renamed

_MOVED = (
    "TOKEN_METHODS",
    "TokenMethod",
    "TokenPrunedViT",
    "TokenSchedule",
    "block_flops",
    "prune_tokens",
    "schedule_for_flop_reduction",
)
_MODULES = ("baselines", "prune", "schedule", "select", "zero_tprune")

__getattr__ = renamed(
    __name__,
    {name: f"jaxprune.token_pruning:{name}" for name in _MOVED}
    | {name: f"jaxprune.token_pruning.{name}" for name in _MODULES},
)
