"""Wanda computed with NumPy from each block's taps: the independent reference of engine tests."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxprune.core import paths


def wanda_by_hand(model, params, windows, sparsity: float) -> dict[tuple[int, str], np.ndarray]:
    """``{(block, linear): keep-mask}`` of Wanda at ``sparsity`` per output column.

    Scores ``|W| · ‖x‖₂`` in float64 from the taps the block hands back, the lowest
    ``int(d_in · sparsity)`` of every column removed (ties by position, a stable argsort); each
    block runs with its own index and its pruned weights feed the next block.
    """
    tap_of = model.family.tap_of
    hidden = model.embed(params, jnp.asarray(windows))
    masks = {}
    for block in range(model.num_blocks):
        bp = model.block_params(params, block)
        _, taps = model.block(bp, hidden, capture=True, index=block)
        for name, tap in tap_of.items():
            w = np.asarray(paths.get_leaf(bp, f"{name}/kernel"))
            x = np.asarray(taps[tap], np.float64).reshape(-1, w.shape[0])
            score = np.abs(w) * np.sqrt((x * x).sum(0))[:, None]
            keep = np.ones_like(w, bool)
            for j in range(w.shape[1]):
                keep[np.argsort(score[:, j], kind="stable")[: int(w.shape[0] * sparsity)], j] = 0
            masks[(block, name)] = keep
            bp = paths.set_leaves(bp, {f"{name}/kernel": jnp.asarray(w * keep)})
        hidden = model.block(bp, hidden, index=block)
    return masks
