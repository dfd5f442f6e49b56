"""One-shot pruning methods: per-kernel solvers, their statistics, and the registry by name.

Every method prunes one kernel (Flax layout ``(in, out)``) given the statistics of its inputs::

    from jaxprune.methods import get_method

    method = get_method("sparsegpt")
    state = method.statistics.init(d_in)
    for x in batches:
        state = method.statistics.update(state, x)
    kernel, keep = method.solve(kernel, state, NM(2, 4), **method.options)

Each built-in module registers itself when it is imported below (``sorted(PRUNING_METHODS)``
lists them).
A new method is one module that ends with ``register_method(Method(...))`` plus its import line
here; nothing else changes (see ``docs/design.md``, "Adding a method"). Refinement steps
(DSnoT) register in :data:`REFINEMENTS` and compose with any method by name: ``"wanda+dsnot"``.
"""

from __future__ import annotations

from jaxprune.core.deprecation import renamed

# Importing a built-in registers it.
from jaxprune.methods import (  # noqa: F401
    alps,
    dsnot,
    magnitude,
    ria,
    sparsegpt,
    sparsellm,
    statistics,
    wanda,
)
from jaxprune.methods.base import (
    PRUNING_METHODS,
    REFINEMENTS,
    JointSolution,
    JointUnit,
    Method,
    Refinement,
    get_method,
    refined,
    register_method,
    register_refinement,
)
from jaxprune.methods.statistics import LinearStats, Statistic

__all__ = [
    "PRUNING_METHODS",
    "REFINEMENTS",
    "JointSolution",
    "JointUnit",
    "LinearStats",
    "Method",
    "Refinement",
    "Statistic",
    "alps",
    "dsnot",
    "get_method",
    "magnitude",
    "refined",
    "register_method",
    "register_refinement",
    "sparsegpt",
    "sparsellm",
    "statistics",
    "wanda",
]

# Old names, kept for a while: each warns and gives the new one.
__getattr__ = renamed(__name__, {"METHODS": "PRUNING_METHODS"})
