"""Data-driven allocation: a pass over the dense model before any block is pruned.

OWL (outlier-weighted layerwise sparsity) measures, block by block, the share of Wanda scores
``|W|·‖X‖`` above ``owl_m`` times their mean over all the block's targeted linears, and gives
blocks with more outliers a lower sparsity (:func:`jaxprune.allocation.owl_sparsities`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

import jaxprune.engine.experts as experts
from jaxprune import allocation
from jaxprune.core.paths import get_leaf
from jaxprune.core.sparsity import Unstructured
from jaxprune.engine.calibrate import BlockRunner
from jaxprune.engine.placement import Placement
from jaxprune.engine.plan import PrunePlan
from jaxprune.engine.report import progress_bar
from jaxprune.methods import wanda
from jaxprune.methods.statistics import SQ_NORMS
from jaxprune.models.base import Params
from jaxprune.recipes import Recipe


def owl_block_sparsity(
    plan: PrunePlan,
    params: Params,
    hidden: list[jax.Array],
    recipe: Recipe,
    runner: BlockRunner,
    placement: Placement,
    progress: bool,
) -> tuple[dict[int, float], dict[int, float]]:
    """OWL's per-block sparsities from a pass over the dense model.

    Returns:
      ``(sparsity, outlier ratio)``, each by index of a block with targeted linears.
    """
    target = recipe.target
    if not isinstance(target, Unstructured):
        raise ValueError("OWL allocation needs an unstructured sparsity, not an N:M pattern")
    ratios, sizes, pruned_blocks = [], [], []
    blocks = placement.blocks(params)
    for block in progress_bar(plan.blocks, progress, "OWL outlier pass"):
        block_params = next(blocks)
        taps = tuple(dict.fromkeys(lin.tap for lin in block.linears))
        out = runner.run(
            block_params,
            hidden,
            index=block.index,
            statistic=SQ_NORMS,
            stat_taps=taps,
            with_output=True,
        )
        if block.linears:
            scores = [
                _wanda_scores(get_leaf(block_params, lin.kernel_path), out.stats[lin.tap])
                for lin in block.linears
            ]
            ratios.append(allocation.outlier_ratio(scores, recipe.owl_m))
            sizes.append(sum(int(s.size) for s in scores))
            pruned_blocks.append(block.index)
        hidden = out.hidden
    sparsities = allocation.owl_sparsities(
        ratios, target.sparsity, recipe.owl_lambda, sizes=np.asarray(sizes)
    )
    return (
        dict(zip(pruned_blocks, (float(s) for s in sparsities), strict=True)),
        dict(zip(pruned_blocks, (float(r) for r in ratios), strict=True)),
    )


def _wanda_scores(kernel: jax.Array, stats: Any) -> jax.Array:
    """Wanda's scores of a kernel, expert by expert for stacked experts (each expert's weights
    against the norms of its own routed tokens)."""
    if isinstance(stats, experts.ExpertStats):
        return jax.vmap(wanda.scores)(kernel, stats.stats.sq_norms)
    return wanda.scores(kernel, stats.sq_norms)
