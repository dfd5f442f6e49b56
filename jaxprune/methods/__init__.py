"""Per-layer pruning solvers and their registry by name.

Every method prunes one kernel (Flax layout ``(in, out)``) given the statistics of its inputs::

    from jaxprune.methods import get_method, statistics

    stats = statistics.accumulate(statistics.init_stats(d_in, with_hessian=True), x)
    method = get_method("sparsegpt")
    kernel, keep = method.prune(kernel, stats, NM(2, 4), **method.options)

Registered: ``magnitude`` (no inputs), ``wanda`` (input norms), ``sparsegpt`` (input Hessian),
``sparsellm`` (SparseGPT for attention, the MLP solved jointly by :func:`sparsellm.prune_mlp`).
"""

from __future__ import annotations

from jaxprune.methods import magnitude, sparsegpt, sparsellm, statistics, wanda
from jaxprune.methods.base import METHODS, Method, get_method, register_method
from jaxprune.methods.statistics import LinearStats

register_method(Method("magnitude", needs_hessian=False, prune=magnitude.prune, needs_inputs=False))
register_method(Method("wanda", needs_hessian=False, prune=wanda.prune))
register_method(
    Method(
        "sparsegpt",
        needs_hessian=True,
        prune=sparsegpt.prune,
        options={"blocksize": 128, "percdamp": 0.01},
        prune_on_mesh=sparsegpt.prune_on_mesh,
    )
)


def _without_mlp_options(sparsegpt_step):
    """SparseLLM's per-kernel step (attention) is SparseGPT; the MLP-only options are not its."""

    def step(*args, blocksize, percdamp, **_mlp_options):
        return sparsegpt_step(*args, blocksize=blocksize, percdamp=percdamp)

    return step


register_method(
    Method(
        "sparsellm",
        needs_hessian=True,
        prune=_without_mlp_options(sparsegpt.prune),
        prune_on_mesh=_without_mlp_options(sparsegpt.prune_on_mesh),
        options=sparsellm.DEFAULT_OPTIONS,
        mlp_solver=sparsellm.prune_mlp,
    )
)

__all__ = [
    "METHODS",
    "LinearStats",
    "Method",
    "get_method",
    "magnitude",
    "register_method",
    "sparsegpt",
    "sparsellm",
    "statistics",
    "wanda",
]
