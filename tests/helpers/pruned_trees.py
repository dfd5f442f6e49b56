"""Tiny pruned params with exact masks, and a leaf-by-leaf fingerprint of any nested dict."""

import jax
import jax.numpy as jnp
import numpy as np
from tiny_models import TINY_LLAMA

from jaxprune.models import LanguageModel


def typed_leaves(tree):
    """Sorted (path with key types, (dtype, shape, bytes)) of every leaf; ``None`` leaves kept."""

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, (*path, (type(k).__name__, k)))
        elif node is None:
            yield path, None
        else:
            a = np.asarray(node)
            yield path, (a.dtype.name, a.shape, a.tobytes())

    return sorted(walk(tree, ()), key=repr)


def magnitude_masks(params, keep_fraction=0.5):
    """Keep the largest-|w| fraction of every 2-D kernel (NumPy reference)."""

    def mask(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" not in name:
            return None
        w = np.abs(np.asarray(leaf, np.float32)).reshape(-1)
        keep = np.zeros(w.size, bool)
        keep[np.argsort(w, kind="stable")[w.size - int(round(keep_fraction * w.size)) :]] = True
        return jnp.asarray(keep.reshape(leaf.shape))

    return jax.tree_util.tree_map_with_path(mask, params)


def two_four_mask(w):
    """2:4 along the input axis of an ``(in, out)`` kernel: keep the 2 largest of every 4."""
    a = np.abs(np.asarray(w, np.float32))
    groups = a.T.reshape(a.shape[1], -1, 4)
    rank = np.argsort(np.argsort(-groups, axis=-1, kind="stable"), axis=-1)
    return (rank < 2).reshape(a.shape[1], a.shape[0]).T


def apply_masks(params, masks):
    return jax.tree.map(
        lambda w, m: w if m is None else jnp.where(m, w, jnp.zeros((), w.dtype)),
        params,
        masks,
        is_leaf=lambda x: x is None,
    )


def tiny_llama():
    """The tiny LLaMA, its params pruned to 50% by magnitude, and the masks."""
    model = LanguageModel(TINY_LLAMA)
    params = model.init_params(0)
    masks = magnitude_masks(params)
    return model, apply_masks(params, masks), masks
