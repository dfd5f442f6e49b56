"""Pruning recipes: what to prune, how much, with which method and calibration data.

A :class:`Recipe` is a frozen dataclass that can be written to and read from YAML/JSON
(:class:`~jaxprune.core.config.ConfigIO`). It is
validated when it is made, so a recipe that exists is a valid one and every mistake is reported
before any expensive work starts.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from typing import Any

from jaxprune.core.config import ConfigIO
from jaxprune.core.deprecation import renamed
from jaxprune.core.sparsity import Target, Unstructured, parse_target
from jaxprune.methods import get_method

RECIPE_ALLOCATIONS = ("uniform", "owl")


@dataclasses.dataclass(frozen=True)
class Recipe(ConfigIO):
    """Everything that determines a one-shot prune.

    Attributes:
      method: a registered method name (``magnitude``, ``wanda``, ``sparsegpt``, ``sparsellm``).
      sparsity: a fraction in [0, 1) or an N:M pattern such as ``"2:4"``.
      targets: regexes (full match) of the leaf paths to prune; ``None`` = the family's default
        (every attention and MLP projection kernel).
      ignore: regexes of paths never pruned, applied after ``targets``.
      allocation: ``uniform`` (every target at ``sparsity``) or ``owl`` (outlier-weighted, per
        block).
      owl_m, owl_lambda: OWL's outlier threshold multiple and the ± spread around the target.
      overrides: ``{regex: sparsity or "N:M"}`` applied last; later entries win.
      true_sequential: re-capture inputs after each group of linears inside a block (attention
        q/k/v, then o, then the MLP input projections, then the MLP output projection).
      method_options: keyword options of the method (e.g. ``{"blocksize": 128, "percdamp": 0.01}``).
      calib, nsamples, seqlen, seed: calibration windows (a corpus name or a text path).
      batch_size: windows per forward pass during calibration.

    Example:
      >>> import jaxprune as jp
      >>> recipe = jp.Recipe(method="sparsegpt", sparsity="2:4", ignore=["lm_head"])
      >>> recipe.target, recipe.ignore
      (NM(n=2, m=4), ('lm_head',))
      >>> jp.Recipe.from_dict(recipe.to_dict()) == recipe      # also ``save``/``load`` as YAML
      True
      >>> jp.Recipe(method="wanda", sparsity=1.5)
      Traceback (most recent call last):
      ...
      ValueError: sparsity must be in [0, 1), got 1.5
    """

    method: str = "magnitude"
    sparsity: float | str = 0.5
    targets: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    allocation: str = "uniform"
    owl_m: float = 5.0
    owl_lambda: float = 0.08
    overrides: tuple[tuple[str, float | str], ...] = ()
    true_sequential: bool = False
    method_options: tuple[tuple[str, Any], ...] = ()
    calib: str = "shakespeare-calib"
    nsamples: int = 64
    seqlen: int = 512
    seed: int = 0
    batch_size: int = 8

    NAME = "recipe"

    def __post_init__(self):
        self._normalise()
        self._validate()

    def _normalise(self) -> None:
        # Accept the friendlier list/dict spellings (from YAML or keyword arguments).
        if isinstance(self.targets, str):
            object.__setattr__(self, "targets", (self.targets,))
        elif self.targets is not None:
            object.__setattr__(self, "targets", tuple(self.targets))
        if isinstance(self.ignore, str):
            object.__setattr__(self, "ignore", (self.ignore,))
        else:
            object.__setattr__(self, "ignore", tuple(self.ignore))
        for name in ("overrides", "method_options"):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, tuple(value.items()))
            else:
                object.__setattr__(self, name, tuple(tuple(kv) for kv in value))

    @functools.cached_property
    def target(self) -> Target:
        """The parsed ``sparsity`` (parsed once)."""
        return parse_target(self.sparsity)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.method_options)

    def validate(self) -> Recipe:
        """Returns ``self``: a recipe is validated when it is made (kept for chaining)."""
        return self

    def _validate(self) -> None:
        """Raises ``ValueError`` naming the first invalid field."""
        method = get_method(self.method)
        method.resolve_options(self.options)
        target = self.target  # parses and range-checks the sparsity
        for pattern in [*(self.targets or ()), *self.ignore, *(p for p, _ in self.overrides)]:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"invalid path regex {pattern!r} in the recipe: {err}") from None
        for _pattern, value in self.overrides:
            parse_target(value)
        if self.allocation not in RECIPE_ALLOCATIONS:
            raise ValueError(
                f"unknown allocation {self.allocation!r}; choose one of {RECIPE_ALLOCATIONS}"
            )
        if self.allocation == "owl" and not isinstance(target, Unstructured):
            raise ValueError(
                f"OWL allocation spreads an unstructured sparsity; {target} is an N:M pattern, "
                "use allocation='uniform' with it"
            )
        if not 0.0 <= self.owl_lambda < 1.0 or self.owl_m <= 0:
            raise ValueError(
                f"owl_lambda must be in [0, 1) and owl_m > 0, got {self.owl_lambda}, {self.owl_m}"
            )
        for name in ("nsamples", "seqlen", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as YAML/JSON data; ``overrides`` and ``method_options`` as mappings."""
        d = super().to_dict()
        d["overrides"] = dict(self.overrides)
        d["method_options"] = dict(self.method_options)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recipe:
        """A recipe from its dict; a saved ``recipe.json``'s ``calibration`` and ``versions``
        records (what ran, with which packages) are not recipe fields and are skipped, so a saved
        recipe can be run again."""
        if isinstance(d, Mapping):
            d = {k: v for k, v in d.items() if k not in ("calibration", "versions")}
        return super().from_dict(d)


# Old names, kept for a while: each warns and gives the new one.
__getattr__ = renamed(__name__, {"ALLOCATIONS": "RECIPE_ALLOCATIONS"})
