"""Structured pruning: remove whole attention heads and MLP channels, making models smaller.

LLM-Pruner's coupled groups and gradient importance (Ma et al., NeurIPS 2023) and FLAP's
fluctuation metric with bias compensation (An et al., AAAI 2024), on any family whose record
declares its :class:`~jaxprune.models.base.StructureSpec`. The result is a physically smaller model
(per-layer widths in its config) that saves, reloads, evaluates and prunes again like any other.

- :mod:`~.groups`: the coupled groups (GQA-aware) and LLM-Pruner's group reductions;
- :mod:`~.importance`: gradients (window by window, float32) and per-channel importance;
- :mod:`~.flap`: fluctuation statistics, standardised scores, compensation biases;
- :mod:`~.allocate`: the parameter target, per-block widths or one global ranking;
- :mod:`~.shrink`: slicing the params into a smaller config (and zeroing, for the tests);
- :mod:`~.experts`: expert pruning of mixture-of-experts models (REAP and baselines);
- :mod:`~.recipe`, :mod:`~.prune`: :class:`StructuredRecipe` and :func:`prune_structured`.

CNN filter pruning works on the vision models of :mod:`jaxprune.models.vision`:

- :mod:`~.filters`: coupled channel groups (through BatchNorm and residual adds), L1 scores,
  masks and the physical shrink;
- :mod:`~.beta_rank`: Beta-Rank and HRank scores from calibration images;
- :mod:`~.gates`: polarization — channel gates trained jointly with the weights (straight-through,
  budget and polarizing penalties; BatchNorm-γ polarization) exported to the smaller model in
  one call; :mod:`~.lm_gates`: the same gates on decoder heads and MLP channels;
- :mod:`~.bn_export`: BatchNorm-γ channel removal with the removed channels' constant ``relu(β)``
  folded into the next layer, and the reference variant's γ init and clamp.
"""

from jaxprune.core.deprecation import renamed
from jaxprune.structured import beta_rank, bn_export, experts, filters, gates, lm_gates
from jaxprune.structured.allocate import count_params, default_block_range, make_plan
from jaxprune.structured.groups import ATTENTION_UNITS, REDUCTIONS, BlockKeep
from jaxprune.structured.importance import KINDS
from jaxprune.structured.prune import StructuredResult, prune_structured
from jaxprune.structured.recipe import STRUCTURED_METHODS, StructuredRecipe
from jaxprune.structured.shrink import shrink, zero_groups

__all__ = [
    "ATTENTION_UNITS",
    "KINDS",
    "STRUCTURED_METHODS",
    "REDUCTIONS",
    "BlockKeep",
    "StructuredRecipe",
    "StructuredResult",
    "beta_rank",
    "bn_export",
    "count_params",
    "experts",
    "default_block_range",
    "filters",
    "gates",
    "lm_gates",
    "make_plan",
    "prune_structured",
    "shrink",
    "zero_groups",
]

# Old names, kept for a while: each warns and gives the new one.
__getattr__ = renamed(__name__, {"METHODS": "STRUCTURED_METHODS"})
