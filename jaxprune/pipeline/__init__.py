"""The whole job in one call: load a model, calibrate, prune, evaluate, save; recover; score.

- :mod:`~.prune`: :func:`prepare` (everything that can fail on bad input, before any work),
  :func:`run`, :func:`prune_pretrained` and :class:`PrunedModel`;
- :mod:`~.load`: :func:`load_model` (by slices onto a mesh) and :func:`load_with_tokenizer`;
- :mod:`~.recover`: :func:`recover_pretrained`, :class:`RecoveredModel` and
  :func:`evaluate_zero_shot`;
- :mod:`~.versions`: :func:`package_versions`, recorded in every saved ``recipe.json``.
"""

from jaxprune.pipeline.load import load_model, load_with_tokenizer
from jaxprune.pipeline.prune import (
    Prepared,
    PrunedModel,
    check_recipe,
    evaluate,
    needs_calibration,
    prepare,
    prune_pretrained,
    run,
)
from jaxprune.pipeline.recover import RecoveredModel, evaluate_zero_shot, recover_pretrained
from jaxprune.pipeline.versions import package_versions

__all__ = [
    "Prepared",
    "PrunedModel",
    "RecoveredModel",
    "check_recipe",
    "evaluate",
    "evaluate_zero_shot",
    "load_model",
    "load_with_tokenizer",
    "needs_calibration",
    "package_versions",
    "prepare",
    "prune_pretrained",
    "recover_pretrained",
    "run",
]
