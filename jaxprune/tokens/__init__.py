"""Deprecated: the old name of :mod:`jaxprune.token_pruning` (ViT token pruning).

Every name resolves to the new package's, with a ``DeprecationWarning``.
"""

from jaxprune import token_pruning as _new
from jaxprune.core.deprecation import renamed

_MODULES = ("baselines", "prune", "schedule", "select", "zero_tprune")

__getattr__ = renamed(
    __name__,
    {name: f"{_new.__name__}:{name}" for name in _new.__all__}
    | {name: f"{_new.__name__}.{name}" for name in _MODULES},
)
