"""Physically smaller models: slice the removed groups out of the params and make a new config.

:func:`shrink` returns a :class:`~jaxprune.models.LanguageModel` whose config has per-layer widths
(``config.with_layer_widths``) and params of exactly its shapes, so the result saves with
``save_pruned`` and reloads with ``load_pretrained`` like any model. :func:`zero_groups` is the
same removal done by zeroing the groups' rows and columns in place (same shapes): the two give the
same logits, which is the test that a group is exactly what the model needs removed together.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.core.paths import get_leaf, leaf_paths, set_leaves
from jaxprune.models.base import LanguageModel, Params
from jaxprune.structured.groups import (
    BlockKeep,
    Member,
    attention_members,
    channels_of,
    mlp_members,
)

__all__ = ["kept_channels", "shrink", "zero_groups"]


def kept_channels(model: LanguageModel, keep: BlockKeep) -> list[tuple[Member, np.ndarray]]:
    """Every member linear of a block with the channel indices it keeps."""
    structure, head_dim = model.family.structure, model.config.head_dim
    heads, kv_heads = channels_of(keep.heads, head_dim), channels_of(keep.kv_heads, head_dim)
    query, key, value, attn_out = attention_members(structure, "kv_group")
    mlp = np.asarray(keep.mlp, np.int64)
    return [
        (query, heads),
        (key, kv_heads),
        (value, kv_heads),
        (attn_out, heads),
        *((member, mlp) for member in mlp_members(structure)),
    ]


def _edit(block: Params, model: LanguageModel, keep: BlockKeep, zero: bool) -> dict[str, jax.Array]:
    leaves = {}
    for member, idx in kept_channels(model, keep):
        linear = get_leaf(block, member.path)
        for leaf in ("kernel", "bias"):
            if leaf not in linear or (leaf == "bias" and member.axis == "in"):
                continue
            value = linear[leaf]
            axis = 1 if member.axis == "out" and leaf == "kernel" else 0
            if zero:
                mask = np.zeros(value.shape[axis], bool)
                mask[idx] = True
                shape = [1] * value.ndim
                shape[axis] = -1
                leaves[f"{member.path}/{leaf}"] = jnp.where(mask.reshape(shape), value, 0)
            else:
                leaves[f"{member.path}/{leaf}"] = jnp.take(value, jnp.asarray(idx), axis=axis)
    return leaves


def zero_groups(model: LanguageModel, params: Params, keeps: Mapping[int, BlockKeep]) -> Params:
    """``params`` with every removed group's rows, columns and biases set to zero (same shapes)."""
    for i, keep in keeps.items():
        keep.check(model.config.layer_widths(i))
        block = model.block_params(params, i)
        params = model.with_block_params(
            params, i, set_leaves(block, _edit(block, model, keep, True))
        )
    return params


def shrink(
    model: LanguageModel,
    params: Params,
    keeps: Mapping[int, BlockKeep],
    biases: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[LanguageModel, Params]:
    """Removes the groups that ``keeps`` drops, physically.

    Args:
      model, params: the model to shrink.
      keeps: ``{block: BlockKeep}``; blocks not listed keep everything.
      biases: ``{block: (attention bias, MLP bias)}`` added to the output projections' biases
        (FLAP's compensation); the config gains biases if it has none.

    Returns:
      The smaller model and its params (every leaf of the new config, nothing else).

    Raises:
      ValueError: a keep that leaves an invalid block (see :meth:`BlockKeep.check`).
    """
    config = model.config
    widths = [config.layer_widths(i) for i in range(model.num_blocks)]
    for i, keep in keeps.items():
        keep.check(widths[i])
        widths[i] = keep.widths
    config = config.with_layer_widths(widths)
    if biases:
        config = config.with_output_biases()
    smaller = LanguageModel(config, dtype=model.dtype)
    for i, keep in keeps.items():
        block = model.block_params(params, i)
        params = smaller.with_block_params(
            params, i, set_leaves(block, _edit(block, model, keep, False))
        )
    params = _complete(smaller, params)
    structure = model.family.structure
    for i, (attn_bias, mlp_bias) in (biases or {}).items():
        block = smaller.block_params(params, i)
        leaves = {}
        for path, extra in ((structure.attn_out, attn_bias), (structure.mlp_out, mlp_bias)):
            bias = get_leaf(block, f"{path}/bias")
            leaves[f"{path}/bias"] = (
                bias.astype(jnp.float32) + jnp.asarray(extra, jnp.float32)
            ).astype(bias.dtype)
        params = smaller.with_block_params(params, i, set_leaves(block, leaves))
    return smaller, params


def _complete(model: LanguageModel, params: Params) -> Params:
    """The model's params tree from ``params``, missing leaves (new biases) zero; shapes checked."""
    abstract = jax.eval_shape(lambda: model.init_params(0))
    have = dict(zip(leaf_paths(params), jax.tree.leaves(params), strict=True))

    def leaf(path: str, spec: jax.ShapeDtypeStruct) -> jax.Array:
        if path not in have:
            return jnp.zeros(spec.shape, model.dtype)
        if tuple(have[path].shape) != tuple(spec.shape):
            raise AssertionError(f"shrunk {path} has shape {have[path].shape}, not {spec.shape}")
        return have[path]

    paths = iter(leaf_paths(abstract))
    return jax.tree.map(lambda spec: leaf(next(paths), spec), abstract)
