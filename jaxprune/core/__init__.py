"""The floor everything stands on: sparsity types, exact-count selection, pytree paths, masks.

Pure array and pytree code that imports only JAX and NumPy (and no other jaxprune module), so that
every other package — one-shot methods, the engine, training-time pruning, structured pruning —
shares one meaning of "a 2:4 target", "the k smallest" and "the leaf at ``layers/3/mlp/up_proj``".
"""

from jaxprune.core import masks, paths, select, sparsity
from jaxprune.core.masks import (
    apply_masks,
    mask_global,
    mask_nm,
    mask_per_layer,
    mask_per_output,
    sparsity_report,
)
from jaxprune.core.paths import Tree, get_leaf, leaf_paths, select_paths, set_leaves
from jaxprune.core.select import (
    nm_prune_mask,
    num_pruned,
    order_keys,
    smallest_mask,
    smallest_mask_sharded,
)
from jaxprune.core.sparsity import NM, Target, Unstructured, parse_target

__all__ = [
    "NM",
    "Target",
    "Tree",
    "Unstructured",
    "apply_masks",
    "get_leaf",
    "leaf_paths",
    "mask_global",
    "mask_nm",
    "mask_per_layer",
    "mask_per_output",
    "masks",
    "nm_prune_mask",
    "num_pruned",
    "order_keys",
    "parse_target",
    "paths",
    "select",
    "select_paths",
    "set_leaves",
    "smallest_mask",
    "smallest_mask_sharded",
    "sparsity",
    "sparsity_report",
]
