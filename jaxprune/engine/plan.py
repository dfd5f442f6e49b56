"""What a prune will do, decided before any work: which linears, in which blocks, in which order.

:meth:`PrunePlan.build` reads only the model's family record, the params' paths, the recipe and the
method, so every bad target is an error before a single forward pass, and the planning can be
tested without running a model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprune.core.paths import get_leaf, select_paths
from jaxprune.methods.base import Method
from jaxprune.models.base import LanguageModel, MlpSpec, Params
from jaxprune.recipes import Recipe


@dataclasses.dataclass(frozen=True)
class Linear:
    """A targeted kernel of decoder block ``block``: ``name`` like ``"mlp/up_proj"``."""

    path: str
    block: int
    name: str
    tap: str

    @property
    def kernel_path(self) -> str:
        """The kernel's path inside its block's params."""
        return f"{self.name}/kernel"


@dataclasses.dataclass(frozen=True)
class TapGroup:
    """Linears reading one tap, each solved on its own from that tap's statistics."""

    tap: str
    linears: tuple[Linear, ...]


@dataclasses.dataclass(frozen=True)
class JointMlp:
    """A whole MLP solved at once by the method's joint solver; ``linears`` in ``spec``'s order.

    ``name`` (``"layers/3/mlp"``) keys the solver's report.
    """

    spec: MlpSpec
    linears: tuple[Linear, ...]
    name: str

    @property
    def by_role(self) -> dict[str, Linear]:
        return {role: lin for (role, _), lin in zip(self.spec.roles, self.linears, strict=True)}


Unit = TapGroup | JointMlp


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """One decoder block: its targeted linears and the stages that prune them.

    Every stage captures the block's inputs once (with the earlier stages already pruned) and then
    solves its units; without ``true_sequential`` there is a single stage.
    """

    index: int
    linears: tuple[Linear, ...]
    stages: tuple[tuple[Unit, ...], ...]


@dataclasses.dataclass(frozen=True)
class PrunePlan:
    """The linears a recipe prunes and how.

    Attributes:
      paths: every pruned leaf path, in params order.
      linears: the pruned paths that are linears of decoder blocks.
      others: the pruned paths that are not (only magnitude can prune those).
      calibrated: whether calibration windows are needed (the method reads statistics, or the
        allocation has a data pass).
      blocks: one :class:`BlockPlan` per decoder block of the model.
    """

    paths: tuple[str, ...]
    linears: tuple[Linear, ...]
    others: tuple[str, ...]
    calibrated: bool
    blocks: tuple[BlockPlan, ...]

    @classmethod
    def build(
        cls, model: LanguageModel, params: Params, recipe: Recipe, method: Method
    ) -> PrunePlan:
        """Plans ``recipe`` with ``method`` on ``model``.

        Raises:
          ValueError: a target pattern matches nothing, a method that needs calibration inputs
            targets something that is not a linear of a decoder block, a method whose statistics
            cannot be masked targets stacked experts, or a data-driven allocation has no block
            linear to spread over.
        """
        family = model.family
        paths = tuple(
            select_paths(params, recipe.targets or (family.default_targets,), recipe.ignore)
        )
        tap_of = family.tap_of
        linears, others = [], []
        for path in paths:
            where = model.block_of(path)
            name = where[1].rpartition("/")[0] if where else ""
            if where and where[1].endswith("/kernel") and name in tap_of:
                linears.append(Linear(path, where[0], name, tap_of[name]))
            else:
                others.append(path)
        if method.needs_inputs and others:
            raise ValueError(
                f"method {method.name!r} needs calibration inputs, but these targets are not "
                f"linears of a decoder block: {others[:5]}; narrow `targets` or use magnitude"
            )
        stats = method.statistics
        stacked = [lin.path for lin in linears if len(get_leaf(params, lin.path).shape) == 3]
        if stacked and stats is not None and stats.update_masked is None:
            raise ValueError(
                f"method {method.name!r}'s statistics cannot be gathered per expert (no "
                f"update_masked), but it targets stacked expert kernels {stacked[:3]}; exclude "
                "them (`ignore`) or use another method"
            )
        if recipe.allocation == "owl" and not linears:
            raise ValueError(
                "allocation 'owl' spreads sparsity over decoder blocks, but no target is a linear "
                f"of a decoder block ({others[:5]}); use allocation='uniform'"
            )
        blocks = tuple(
            _block_plan(model, method, recipe, i, tuple(lin for lin in linears if lin.block == i))
            for i in range(model.num_blocks)
        )
        calibrated = method.needs_inputs or recipe.allocation == "owl"
        return cls(paths, tuple(linears), tuple(others), calibrated, blocks)


def _block_plan(
    model: LanguageModel, method: Method, recipe: Recipe, index: int, linears: tuple[Linear, ...]
) -> BlockPlan:
    """The units of one block: tap groups in the family's order, then the joint MLP (if any).

    A joint method solves the MLP as one unit only when every linear of it is targeted; otherwise
    its linears are solved per kernel like the rest.
    """
    spec = model.family.mlp
    by_name = {lin.name: lin for lin in linears}
    joint: JointMlp | None = None
    if method.joint is not None and spec is not None and set(spec.paths.values()) <= set(by_name):
        linears_in_order = tuple(by_name[path] for _, path in spec.roles)
        joint = JointMlp(spec, linears_in_order, f"{model.block_prefix(index)}mlp")
    skip = {spec.in_tap, spec.out_tap} if joint is not None else set()
    units: list[Any] = [
        TapGroup(tap, group)
        for tap, _ in model.family.sequential_groups
        if tap not in skip and (group := tuple(lin for lin in linears if lin.tap == tap))
    ]
    if joint is not None:
        units.append(joint)
    stages = (
        tuple((u,) for u in units) if recipe.true_sequential else ((tuple(units),) if units else ())
    )
    return BlockPlan(index, linears, stages)
