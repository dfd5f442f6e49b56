"""The method protocol and its registry.

A one-shot method is, in the optax style, a small record of pure functions:

* ``statistics`` — a :class:`~jaxprune.methods.statistics.Statistic` pair (``init``, ``update``)
  that the engine accumulates over the calibration inputs of every linear without knowing what it
  computes (``None``: the method needs no calibration data);
* ``solve(kernel, stats, target, **options) -> (kernel, keep)`` for one Flax ``(in, out)`` kernel;
* ``solve_sharded(kernel, stats, target, layout, **options)`` for a kernel whose output columns
  are split over a mesh, when the mask couples the columns (SparseGPT's per-block selection);
  ``None`` when ``solve`` already gives the single-device result on sharded arrays;
* ``solve_group(kernels, stats, targets, **options)`` for several kernels reading the same input
  (q/k/v, gate/up) when solving them together is cheaper (SparseGPT factors their shared Hessian
  once and sweeps them side by side); ``None``: the engine calls ``solve`` per kernel;
* ``joint(unit, targets, **joint_options)`` for methods that solve a whole MLP at once
  (SparseLLM); the engine then calls ``solve`` only for the other linears.

:func:`refined` composes a base method with a refinement step (optax's ``chain`` for solvers), and
:func:`register_method` makes a method reachable by name from recipes and the command line.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxprune.core.deprecation import renamed
from jaxprune.core.sparsity import NM, Target, Unstructured
from jaxprune.methods.statistics import Statistic, combine

SolveFn = Callable[..., tuple[jax.Array, jax.Array]]


class JointUnit(NamedTuple):
    """One MLP as a joint solver sees it.

    Attributes:
      kind: the MLP's shape, ``"gated"`` (roles ``gate``, ``up``, ``down``) or ``"relu"``
        (roles ``in``, ``out``, with biases).
      kernels: Flax ``(in, out)`` kernels by role.
      biases: biases by role (``{}`` when the MLP has none).
      x: ``(tokens, d)`` float32 inputs of the MLP.
      y: ``(tokens, d)`` float32 dense outputs of the MLP on ``x``.
      activation: the activation by name (``"silu"``, ``"gelu_tanh"``, ``"relu"``), as the model
        family declares it (``MlpSpec.activation``).
    """

    kind: str
    kernels: Mapping[str, jax.Array]
    biases: Mapping[str, jax.Array]
    x: jax.Array
    y: jax.Array
    activation: str


class JointSolution(NamedTuple):
    """A jointly pruned MLP.

    Attributes:
      kernels: the pruned kernels by role (input dtypes), exactly zero outside their masks.
      masks: boolean keep masks by role.
      biases: refit biases by role (``{}`` when the solver keeps them).
      objective: the solver's objective after each iteration (normalised, for the report).
      output_error: ‖Y − MLP_pruned(X)‖²/‖Y‖² after each iteration.
    """

    kernels: dict[str, jax.Array]
    masks: dict[str, jax.Array]
    biases: dict[str, jax.Array]
    objective: list[float]
    output_error: list[float]


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered pruning method.

    Attributes:
      name: the registry key (``"sparsegpt"``).
      solve: ``solve(kernel, stats, target, **options) -> (kernel, keep_mask)``; ``stats`` is the
        state of ``statistics`` for the kernel's inputs, or ``None`` when ``statistics`` is.
      statistics: what ``solve`` reads, as an ``(init, update)`` pair; ``None`` = no calibration.
      options: the keyword options of ``solve`` (and ``solve_sharded``), with their defaults.
      solve_sharded: ``solve_sharded(kernel, stats, target, layout, **options)`` for a kernel
        split by output columns over a :class:`jaxprune.sharding.Layout`; ``None`` when ``solve``
        gives the single-device result as it is on sharded arrays.
      solve_group: ``solve_group(kernels, stats, targets, **options) -> [(kernel, keep), ...]``
        for kernels sharing one input, with the results of ``solve`` on each; ``None``: per kernel.
      joint: ``joint(unit, targets, **joint_options) -> JointSolution`` for a whole MLP
        (:class:`JointUnit`; ``targets`` by role), or ``None``.
      joint_options: the keyword options of ``joint``, with their defaults.
    """

    name: str
    solve: SolveFn
    statistics: Statistic | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    solve_sharded: Callable[..., tuple[jax.Array, jax.Array]] | None = None
    solve_group: Callable[..., list[tuple[jax.Array, jax.Array]]] | None = None
    joint: Callable[..., JointSolution] | None = None
    joint_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.joint is not None and self.statistics is None:
            raise ValueError(f"method {self.name!r}: a joint solver needs calibration statistics")
        # Read-only, so that a shared registry entry cannot be changed by one caller.
        object.__setattr__(self, "options", types.MappingProxyType(dict(self.options)))
        object.__setattr__(self, "joint_options", types.MappingProxyType(dict(self.joint_options)))

    @property
    def needs_inputs(self) -> bool:
        """Whether the method reads calibration statistics at all."""
        return self.statistics is not None

    @property
    def known_options(self) -> dict[str, Any]:
        """Every option a recipe may set, with its default (``options`` and ``joint_options``)."""
        return {**self.joint_options, **self.options}

    def resolve_options(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The defaults updated by ``overrides``; ``ValueError`` naming any unknown option."""
        overrides = dict(overrides or {})
        known = self.known_options
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            names = sorted(known) or "none"
            raise ValueError(
                f"method {self.name!r} has no options {unknown}; known options: {names}"
            )
        return {**known, **overrides}

    def solve_options(self, resolved: Mapping[str, Any]) -> dict[str, Any]:
        """The part of resolved options that ``solve`` takes."""
        return {key: resolved[key] for key in self.options}

    def joint_options_of(self, resolved: Mapping[str, Any]) -> dict[str, Any]:
        """The part of resolved options that ``joint`` takes."""
        return {key: resolved[key] for key in self.joint_options}


RefineFn = Callable[..., tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Refinement:
    """A registered refinement step, composable with any method by name (``"wanda+dsnot"``).

    Attributes:
      name: the registry key (``"dsnot"``).
      refine: ``refine(dense, kernel, keep, stats, target, **options) -> (kernel, keep)``.
      statistics: the extra statistics ``refine`` reads (``None``: the base method's).
      options: ``refine``'s keyword options with their defaults.
    """

    name: str
    refine: RefineFn
    statistics: Statistic | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


REFINEMENTS: dict[str, Refinement] = {}


def register_refinement(refinement: Refinement) -> Refinement:
    """Adds ``refinement`` to :data:`REFINEMENTS`; ``ValueError`` if the name is taken."""
    if refinement.name in REFINEMENTS:
        raise ValueError(f"a refinement named {refinement.name!r} is already registered")
    REFINEMENTS[refinement.name] = refinement
    return refinement


def refined(
    base: Method | str,
    refine: RefineFn | str,
    *,
    name: str | None = None,
    statistics: Statistic | None = None,
    options: Mapping[str, Any] | None = None,
) -> Method:
    """A method running ``base`` and then ``refine`` on its result (optax's ``chain`` for solvers).

    ``refine(dense, kernel, keep, stats, target, **options) -> (kernel, keep)`` gets the dense
    kernel, ``base``'s pruned kernel and mask, and the statistics; e.g. a training-free
    prune-and-grow step (DSnoT) that swaps kept and pruned weights per output.
    ``refined("wanda", "dsnot")`` composes a registered method with a registered refinement
    (:data:`REFINEMENTS`), named ``"wanda+dsnot"``; :func:`get_method` builds such names itself.

    Args:
      base: the method whose masks are refined, or its registered name (its ``joint`` solver, if
        any, is not used).
      refine: the refinement step, or a registered refinement's name (which brings its own
        ``statistics`` and ``options``; passing them too is an error).
      name: the new method's registry name; default ``"BASE+REFINE"`` for a named refinement.
      statistics: extra statistics ``refine`` reads; the new method's state is then
        ``(base state, extra state)`` (:func:`~jaxprune.methods.statistics.combine`; ``(None,
        extra state)`` to ``refine`` when ``base`` reads none) and ``base`` still gets its own
        part. ``None``: ``refine`` gets ``base``'s statistics.
      options: ``refine``'s keyword options with their defaults (names distinct from ``base``'s).

    Returns:
      The composed :class:`Method` (not registered).
    """
    if isinstance(base, str):
        base = get_method(base)
    if isinstance(refine, str):
        if refine not in REFINEMENTS:
            raise ValueError(f"unknown refinement {refine!r}; known: {sorted(REFINEMENTS)}")
        if statistics is not None or options is not None:
            raise ValueError(f"refinement {refine!r} brings its own statistics and options")
        record = REFINEMENTS[refine]
        name = name or f"{base.name}+{record.name}"
        refine, statistics, options = record.refine, record.statistics, record.options
    if name is None:
        raise ValueError("refined(...) with a refine function needs name=")
    refine_options = dict(options or {})
    clash = sorted(set(refine_options) & set(base.options))
    if clash:
        raise ValueError(f"refine options {clash} clash with {base.name!r}'s options")
    if statistics is None:
        stats = base.statistics
    elif base.statistics is None:
        stats = statistics
    else:
        stats = combine(base.statistics, statistics)

    def split(stats_state: Any, opts: Mapping[str, Any]):
        if statistics is not None and base.statistics is None:
            base_state, stats_state = None, (None, stats_state)
        else:
            base_state = stats_state if statistics is None else stats_state[0]
        base_opts = {key: opts[key] for key in base.options}
        return base_state, stats_state, base_opts, {key: opts[key] for key in refine_options}

    def solve(kernel, stats_state, target, **opts):
        base_state, stats_state, base_opts, own = split(stats_state, opts)
        new, keep = base.solve(kernel, base_state, target, **base_opts)
        return refine(kernel, new, keep, stats_state, target, **own)

    solve_sharded = None
    if base.solve_sharded is not None:

        def solve_sharded(kernel, stats_state, target, layout, **opts):
            base_state, stats_state, base_opts, own = split(stats_state, opts)
            new, keep = base.solve_sharded(kernel, base_state, target, layout, **base_opts)
            return refine(kernel, new, keep, stats_state, target, **own)

    return Method(
        name,
        solve,
        statistics=stats,
        options={**base.options, **refine_options},
        solve_sharded=solve_sharded,
    )


PRUNING_METHODS: dict[str, Method] = {}


def register_method(method: Method, *, overwrite: bool = False) -> Method:
    """Adds ``method`` to :data:`PRUNING_METHODS` under ``method.name`` and returns it.

    Raises:
      ValueError: the name is taken and ``overwrite`` is false.
    """
    if method.name in PRUNING_METHODS and not overwrite:
        raise ValueError(
            f"a method named {method.name!r} is already registered; "
            "pass overwrite=True to replace it"
        )
    PRUNING_METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called ``name``; ``ValueError`` listing the known names otherwise.

    ``"BASE+REFINE"`` (a registered method and a registered refinement, ``"wanda+dsnot"``) is
    composed with :func:`refined` and registered on first use.
    """
    if name in PRUNING_METHODS:
        return PRUNING_METHODS[name]
    base, plus, step = name.rpartition("+")
    if plus and base in PRUNING_METHODS and step in REFINEMENTS:
        return register_method(refined(base, step))
    raise ValueError(
        f"unknown pruning method {name!r}; known methods: {sorted(PRUNING_METHODS)}, each "
        "optionally followed by +REFINEMENT "
        f"({', '.join(sorted(REFINEMENTS)) or 'none registered'})"
    )


def check_kernel(kernel: jax.Array, method: str) -> None:
    """``ValueError`` unless ``kernel`` is a 2-D floating ``(in, out)`` matrix."""
    if kernel.ndim != 2 or not jnp.issubdtype(kernel.dtype, jnp.floating):
        raise ValueError(
            f"{method} prunes 2-D floating (in, out) kernels, got shape {kernel.shape} "
            f"of dtype {kernel.dtype}; reshape convolution kernels to (fan_in, out) first"
        )


def check_target(target: Target, method: str) -> None:
    """``ValueError`` unless ``target`` is an :class:`Unstructured` or :class:`NM` value."""
    if not isinstance(target, Unstructured | NM):
        raise ValueError(
            f"{method} needs a target Unstructured(s) or NM(n, m) (see jaxprune.core.sparsity."
            f"parse_target), got {target!r}"
        )


def check_sq_norms(kernel: jax.Array, stats: Any, method: str) -> None:
    """``ValueError`` unless ``stats`` carries squared input norms matching ``kernel``'s inputs."""
    if (
        stats is None
        or getattr(stats, "sq_norms", None) is None
        or (stats.sq_norms.shape != kernel.shape[:1])
    ):
        got = None if stats is None else getattr(getattr(stats, "sq_norms", None), "shape", None)
        raise ValueError(
            f"{method} needs the squared input norms of the layer, shape {kernel.shape[:1]}, got "
            f"{got}; accumulate them with jaxprune.methods.statistics.SQ_NORMS"
        )


__all__ = [
    "PRUNING_METHODS",
    "REFINEMENTS",
    "JointSolution",
    "JointUnit",
    "Method",
    "Refinement",
    "check_kernel",
    "check_sq_norms",
    "check_target",
    "get_method",
    "refined",
    "register_method",
    "register_refinement",
]

# Old names, kept for a while: each warns and gives the new one.
__getattr__ = renamed(__name__, {"METHODS": "PRUNING_METHODS"})
