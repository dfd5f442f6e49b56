"""One-shot pruning methods: per-kernel solvers, their statistics, and the registry by name.

Every method prunes one kernel (Flax layout ``(in, out)``) given the statistics of its inputs::

    from jaxprune.methods import get_method

    method = get_method("sparsegpt")
    state = method.statistics.init(d_in)
    for x in batches:
        state = method.statistics.update(state, x)
    kernel, keep = method.solve(kernel, state, NM(2, 4), **method.options)

Each built-in module registers itself when it is imported below (``sorted(METHODS)`` lists them).
A new method is one module that ends with ``register_method(Method(...))`` plus its import line
here; nothing else changes (see ``docs/design.md``, "Adding a method").
"""

from __future__ import annotations

# Importing a built-in registers it.
from jaxprune.methods import (  # noqa: F401
    alps,
    magnitude,
    ria,
    sparsegpt,
    sparsellm,
    statistics,
    wanda,
)
from jaxprune.methods.base import (
    METHODS,
    JointSolution,
    JointUnit,
    Method,
    get_method,
    refined,
    register_method,
)
from jaxprune.methods.statistics import LinearStats, Statistic

__all__ = [
    "METHODS",
    "JointSolution",
    "JointUnit",
    "LinearStats",
    "Method",
    "Statistic",
    "alps",
    "get_method",
    "magnitude",
    "refined",
    "register_method",
    "sparsegpt",
    "sparsellm",
    "statistics",
    "wanda",
]
