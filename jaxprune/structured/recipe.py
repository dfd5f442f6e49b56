"""What a structured prune does: its own small recipe, validated when it is made.

Structured pruning is not an engine method (it changes shapes and reads whole-model gradients),
so it has its own recipe rather than more fields on :class:`jaxprune.Recipe`, whose fields
(N:M targets, OWL, per-kernel method options) mean nothing here. The shared calibration fields
(``calib``, ``nsamples``, ``seqlen``, ``seed``, ``batch_size``) keep the same names.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprune.core.config import ConfigIO
from jaxprune.core.deprecation import renamed
from jaxprune.structured.allocate import STRUCTURED_ALLOCATIONS, default_block_range
from jaxprune.structured.experts import EXPERT_METHODS
from jaxprune.structured.groups import ATTENTION_UNITS, REDUCTIONS
from jaxprune.structured.importance import GRADIENT_KINDS, KINDS

STRUCTURED_METHODS = ("llm-pruner", "flap", *EXPERT_METHODS)
# Each method's defaults: LLM-Pruner's paper computes gradients on 10 windows of 64 tokens and
# prunes block by block, and its documented commands use the element-wise first-order importance
# (``--taylor param_first``: element1); FLAP ranks all blocks together and reads the public
# protocol's calibration windows.
DEFAULTS: dict[str, dict[str, Any]] = {
    "llm-pruner": {
        "importance": "element1",
        "allocation": "per-block",
        "nsamples": 10,
        "seqlen": 64,
    },
    "flap": {"allocation": "global", "nsamples": 64, "seqlen": 512},
    # Expert pruning removes the same fraction of experts in every block.
    **{m: {"allocation": "per-block", "nsamples": 64, "seqlen": 512} for m in EXPERT_METHODS},
}

__all__ = ["DEFAULTS", "STRUCTURED_METHODS", "StructuredRecipe"]


@dataclasses.dataclass(frozen=True)
class StructuredRecipe(ConfigIO):
    """Everything that determines a structured prune.

    Attributes:
      method: ``"llm-pruner"``, ``"flap"`` or an expert method (``"reap"``,
        ``"expert-frequency"``, ``"expert-random"``; see :mod:`~.experts`).
      sparsity: fraction of the non-embedding parameters to remove, in (0, 1); for an expert
        method the fraction of every block's experts removed.
      importance: LLM-Pruner's group importance, one of :data:`~.importance.KINDS`
        (``element1``, the default as in the reference's documented commands, ``vector``,
        ``element2``; baselines ``l1``, ``l2``, ``random``).
      reduction: how a group's linears combine (``sum``, ``mean``, ``max``, ``prod``, ``first``).
      allocation: ``"per-block"`` (the same share in every pruned block) or ``"global"``.
      uniform: every block ends with the same widths (the same attention steps removed, the
        same MLP width kept, a multiple of ``mlp_multiple``): a standard config that
        transformers, vLLM and llama.cpp load unchanged. Prunes every block, per block.
      mlp_multiple: with ``uniform``, the kept MLP width is a multiple of this (default 64).
      block_range: ``(start, end)``, the pruned blocks ``start..end-1``; ``None``: LLM-Pruner's
        range scaled to the depth (it keeps the first and last blocks), FLAP and ``uniform``:
        every block.
      attention_unit: ``"query"`` (query heads, evenly across key/value groups) or
        ``"kv_group"`` (a key/value head with its query heads); see :mod:`~.groups`.
      bias_compensation: FLAP's mean-input biases (FLAP only).
      calib, nsamples, seqlen, seed, batch_size: calibration windows (``None``: the method's
        default, :data:`DEFAULTS`).
      chunk: windows per gradient step (LLM-Pruner; per-window gradients for ``element2``).
      remat: recompute block activations in the backward pass (long windows, large models).
    """

    method: str = "llm-pruner"
    sparsity: float = 0.2
    importance: str | None = None
    reduction: str = "sum"
    allocation: str | None = None
    uniform: bool = False
    mlp_multiple: int = 64
    block_range: tuple[int, int] | None = None
    attention_unit: str = "query"
    bias_compensation: bool = True
    calib: str = "shakespeare-calib"
    nsamples: int | None = None
    seqlen: int | None = None
    seed: int = 0
    batch_size: int = 8
    chunk: int = 1
    remat: bool = False

    NAME = "structured recipe"

    def __post_init__(self):
        if self.method not in STRUCTURED_METHODS:
            raise ValueError(
                f"unknown structured method {self.method!r}; choose one of {STRUCTURED_METHODS}"
            )
        if self.method != "llm-pruner" and self.importance is not None:
            raise ValueError(f"importance applies to llm-pruner; {self.method} has its own scores")
        if self.method in EXPERT_METHODS and (
            self.uniform or self.allocation == "global" or self.block_range is not None
        ):
            raise ValueError(
                f"{self.method} removes the same fraction of every block's experts; drop "
                "uniform, block_range and allocation='global'"
            )
        if self.uniform:
            if self.allocation == "global":
                raise ValueError(
                    "uniform widths give every block the same share; drop allocation='global' "
                    "(or uniform) — global ranking makes blocks differ"
                )
            object.__setattr__(self, "allocation", "per-block")
        elif self.mlp_multiple != 64:
            raise ValueError("mlp_multiple applies to uniform widths; pass uniform=True with it")
        for name, value in DEFAULTS[self.method].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.block_range is not None:
            object.__setattr__(self, "block_range", tuple(self.block_range))
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.sparsity, int | float) or not 0.0 < self.sparsity < 1.0:
            raise ValueError(
                f"sparsity must be a fraction of the non-embedding parameters in (0, 1), "
                f"got {self.sparsity!r}"
            )
        choices = {
            "importance": (self.importance, (*KINDS, None)),
            "reduction": (self.reduction, REDUCTIONS),
            "allocation": (self.allocation, STRUCTURED_ALLOCATIONS),
            "attention_unit": (self.attention_unit, ATTENTION_UNITS),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                choose = [a for a in allowed if a is not None]
                raise ValueError(f"unknown {name} {value!r}; choose one of {choose}")
        if self.block_range is not None:
            start, end = self.block_range
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end):
                raise ValueError(
                    f"block_range must be (start, end) with 0 <= start < end, got "
                    f"{self.block_range}"
                )
        if not isinstance(self.uniform, bool):
            raise ValueError(f"uniform must be true or false, got {self.uniform!r}")
        for name in ("nsamples", "seqlen", "batch_size", "chunk", "mlp_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.seqlen < 2:
            raise ValueError(
                f"seqlen must be at least 2 (one next-token prediction), got {self.seqlen}"
            )

    @property
    def uniform_multiple(self) -> int | None:
        """The plan's ``multiple``: ``mlp_multiple`` for uniform widths, else ``None``."""
        return self.mlp_multiple if self.uniform else None

    @property
    def needs_calibration(self) -> bool:
        reads = ("flap", "reap", "expert-frequency")
        return self.method in reads or self.importance in GRADIENT_KINDS

    def blocks(self, layers: int) -> tuple[int, ...]:
        """The pruned blocks of a ``layers``-block model.

        Raises:
          ValueError: the range reaches past the model's blocks.
        """
        if self.block_range is None:
            llm_pruner = self.method == "llm-pruner" and not self.uniform
            start, end = default_block_range(layers) if llm_pruner else (0, layers)
        else:
            start, end = self.block_range
        if end > layers:
            raise ValueError(
                f"block_range {self.block_range} reaches past the model's {layers} blocks; "
                f"use an end of at most {layers}"
            )
        return tuple(range(start, end))


# Old names, kept for a while: each warns and gives the new one.
__getattr__ = renamed(__name__, {"METHODS": "STRUCTURED_METHODS"})
