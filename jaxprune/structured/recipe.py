"""What a structured prune does: its own small recipe, validated when it is made.

Structured pruning is not an engine method (it changes shapes and reads whole-model gradients),
so it has its own recipe rather than more fields on :class:`jaxprune.Recipe`, whose fields
(N:M targets, OWL, per-kernel method options) mean nothing here. The shared calibration fields
(``calib``, ``nsamples``, ``seqlen``, ``seed``, ``batch_size``) keep the same names.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprune.structured.allocate import ALLOCATIONS, default_block_range
from jaxprune.structured.groups import ATTENTION_UNITS, REDUCTIONS
from jaxprune.structured.importance import GRADIENT_KINDS, KINDS

METHODS = ("llm-pruner", "flap")
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
}

__all__ = ["DEFAULTS", "METHODS", "StructuredRecipe"]


@dataclasses.dataclass(frozen=True)
class StructuredRecipe:
    """Everything that determines a structured prune.

    Attributes:
      method: ``"llm-pruner"`` or ``"flap"``.
      sparsity: fraction of the non-embedding parameters to remove, in (0, 1).
      importance: LLM-Pruner's group importance, one of :data:`~.importance.KINDS`
        (``element1``, the default as in the reference's documented commands, ``vector``,
        ``element2``; baselines ``l1``, ``l2``, ``random``).
      reduction: how a group's linears combine (``sum``, ``mean``, ``max``, ``prod``, ``first``).
      allocation: ``"per-block"`` (the same share in every pruned block) or ``"global"``.
      block_range: ``(start, end)``, the pruned blocks ``start..end-1``; ``None``: LLM-Pruner's
        range scaled to the depth (it keeps the first and last blocks), FLAP: every block.
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

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown structured method {self.method!r}; choose one of {METHODS}")
        if self.method == "flap" and self.importance is not None:
            raise ValueError("importance applies to llm-pruner; FLAP scores by fluctuation")
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
            "allocation": (self.allocation, ALLOCATIONS),
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
        for name in ("nsamples", "seqlen", "batch_size", "chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.seqlen < 2:
            raise ValueError(
                f"seqlen must be at least 2 (one next-token prediction), got {self.seqlen}"
            )

    @property
    def needs_calibration(self) -> bool:
        return self.method == "flap" or self.importance in GRADIENT_KINDS

    def blocks(self, layers: int) -> tuple[int, ...]:
        """The pruned blocks of a ``layers``-block model.

        Raises:
          ValueError: the range reaches past the model's blocks.
        """
        if self.block_range is None:
            start, end = default_block_range(layers) if self.method == "llm-pruner" else (0, layers)
        else:
            start, end = self.block_range
        if end > layers:
            raise ValueError(
                f"block_range {self.block_range} reaches past the model's {layers} blocks; "
                f"use an end of at most {layers}"
            )
        return tuple(range(start, end))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["block_range"] = None if self.block_range is None else list(self.block_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StructuredRecipe:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown structured recipe fields {unknown}; known: {sorted(names)}")
        return cls(**d)
