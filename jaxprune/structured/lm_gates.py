"""Polarization gates for decoder blocks: one gate per attention unit and per MLP channel.

The gates of block ``i`` are ``gates[i] = {"heads": (kv_heads,), "mlp": (mlp,)}`` logits; a
head gate covers a key/value head with all the query heads reading it (the ``kv_group`` unit of
:mod:`~jaxprune.structured.groups`, one query head per gate without GQA), so any setting of the
gates leaves a valid block. The binary gate (:func:`~jaxprune.structured.gates.binary_gates`,
straight-through) multiplies the unit's output: ``(h ⊙ g) W_o = h (diag(g) W_o)``, so it is applied
to the input rows of the output projections (``attn_out`` for heads, ``mlp_out`` for channels).
Gates at 0/1 equal :func:`~jaxprune.structured.shrink.zero_groups` of those units, and
:func:`export_lm` removes the closed units physically
(:func:`~jaxprune.structured.shrink.shrink`).
The penalties of :mod:`~jaxprune.structured.gates` apply as they are (``gate_penalty`` takes any
dict of logit arrays: flatten ``{f"{i}/{k}": v}``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.core.paths import get_leaf, set_leaves
from jaxprune.models.base import LanguageModel, Params
from jaxprune.structured.gates import binary_gates
from jaxprune.structured.groups import BlockKeep, channels_of
from jaxprune.structured.shrink import shrink

__all__ = ["export_lm", "gated_lm_params", "init_lm_gates", "lm_keeps"]


def _check_structured(model: LanguageModel) -> None:
    if model.family.structure is None:
        raise ValueError(f"family {model.family.name!r} declares no StructureSpec: no gates")


def init_lm_gates(model: LanguageModel, logit: float = 3.0) -> list[dict[str, jax.Array]]:
    """Per block ``{"heads": (kv_heads,), "mlp": (mlp,)}`` logits, all ``logit`` (open)."""
    _check_structured(model)
    out = []
    for i in range(model.num_blocks):
        widths = model.config.layer_widths(i)
        out.append(
            {
                "heads": jnp.full((widths.kv_heads,), logit, jnp.float32),
                "mlp": jnp.full((widths.mlp,), logit, jnp.float32),
            }
        )
    return out


def _row_gates(model: LanguageModel, i: int, gates: dict[str, jax.Array]):
    widths = model.config.layer_widths(i)
    head_dim = model.config.head_dim
    if tuple(gates["heads"].shape) != (widths.kv_heads,) or tuple(gates["mlp"].shape) != (
        widths.mlp,
    ):
        raise ValueError(
            f"block {i} gates have shapes {gates['heads'].shape}, {gates['mlp'].shape}; the block "
            f"has {widths.kv_heads} key/value heads and {widths.mlp} MLP channels"
        )
    # Each key/value gate opens its heads/kv_heads query heads of head_dim rows each.
    heads = jnp.repeat(binary_gates(gates["heads"]), (widths.heads // widths.kv_heads) * head_dim)
    return heads, binary_gates(gates["mlp"])


def gated_lm_params(
    model: LanguageModel, params: Params, gates: list[dict[str, jax.Array]]
) -> Params:
    """``params`` with each head's and MLP channel's output multiplied by its binary gate.

    Raises:
      ValueError: a family without structure, or gates that do not fit the blocks.
    """
    _check_structured(model)
    if len(gates) != model.num_blocks:
        raise ValueError(f"{len(gates)} blocks of gates for a model of {model.num_blocks} blocks")
    structure = model.family.structure
    for i, block_gates in enumerate(gates):
        heads, mlp = _row_gates(model, i, block_gates)
        block = model.block_params(params, i)
        leaves = {}
        for path, rows in ((structure.attn_out, heads), (structure.mlp_out, mlp)):
            kernel = get_leaf(block, f"{path}/kernel")
            leaves[f"{path}/kernel"] = kernel * rows[:, None].astype(kernel.dtype)
        params = model.with_block_params(params, i, set_leaves(block, leaves))
    return params


def lm_keeps(model: LanguageModel, gates: list[dict[str, jax.Array]]) -> dict[int, BlockKeep]:
    """``{block: BlockKeep}`` of the units the binary gates keep."""
    keeps = {}
    for i, block_gates in enumerate(gates):
        widths = model.config.layer_widths(i)
        kv = np.flatnonzero(np.asarray(binary_gates(block_gates["heads"])) > 0.5)
        per = widths.heads // widths.kv_heads
        heads = channels_of(kv, per)
        mlp = np.flatnonzero(np.asarray(binary_gates(block_gates["mlp"])) > 0.5)
        keeps[i] = BlockKeep(
            tuple(int(h) for h in heads), tuple(int(k) for k in kv), tuple(int(c) for c in mlp)
        )
    return keeps


def export_lm(
    model: LanguageModel, params: Params, gates: list[dict[str, jax.Array]]
) -> tuple[LanguageModel, Params]:
    """The physically smaller model the gates select and its params (equal to the gated model)."""
    _check_structured(model)
    return shrink(model, params, lm_keeps(model, gates))
