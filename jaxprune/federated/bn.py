"""BatchNorm statistics re-estimated on the clients and pooled exactly on the server.

FedTiny's adaptive BatchNorm selection needs the statistics a candidate model would have on the
union of the clients' data, without the data leaving the clients. Each client sends, per BatchNorm
layer, its count ``n_k``, the mean ``μ_k`` and the (biased, as BatchNorm uses) variance ``σ²_k`` of
the layer's input; the server pools them (Chan et al.'s parallel merge)::

    μ  = Σ n_k μ_k / N
    σ² = Σ n_k (σ²_k + (μ_k − μ)²) / N          (the spread of the client means included)

which equals the mean and variance of the concatenated data. Averaging the variances alone, as
FedAvg does with running statistics, misses the second term and under-estimates the variance on
non-IID splits.

Layers are estimated one at a time in forward order: layer ``l``'s input is computed with every
earlier BatchNorm already holding its pooled statistics, so the result is exactly what one pass
over the concatenated data would give (one exchange of small vectors per BatchNorm layer).
BatchNorm inputs are read by temporarily giving the model's :class:`flax.nnx.BatchNorm` modules a
recording subclass, so any model of :mod:`jaxprune.models.vision` works unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.core.deprecation import renamed
from jaxprune.core.paths import flat_leaves, set_leaves
from jaxprune.models.vision import VisionModel

__all__ = ["BatchNormMoments", "bn_layers", "client_moments", "pool", "pooled_statistics"]

_RECORDING: list[dict[str, jax.Array]] = []


class BatchNormMoments(NamedTuple):
    """Per-channel ``count``, ``mean`` and biased ``var`` (``count`` a scalar, float32)."""

    count: jax.Array
    mean: jax.Array
    var: jax.Array


def pool(moments: BatchNormMoments) -> BatchNormMoments:
    """Pools stacked moments (leading axis = clients or batches) into those of the union."""
    count = jnp.sum(moments.count, axis=0)
    w = moments.count / jnp.maximum(count, 1.0)
    w = w.reshape(w.shape + (1,) * (moments.mean.ndim - 1))
    mean = jnp.sum(w * moments.mean, axis=0)
    var = jnp.sum(w * (moments.var + (moments.mean - mean) ** 2), axis=0)
    return BatchNormMoments(count, mean, var)


class _RecordingBN(nnx.BatchNorm):
    def __call__(self, x, use_running_average=None, *, mask=None):
        _RECORDING[-1][self.jaxprune_path] = x
        return super().__call__(x, use_running_average, mask=mask)


def _bn_inputs(model: VisionModel, params, stats, images) -> dict[str, jax.Array]:
    module = model.module(params, stats)
    for path, node in nnx.iter_graph(module):
        if type(node) is nnx.BatchNorm:
            node.__class__ = _RecordingBN
            node.jaxprune_path = "/".join(str(p) for p in path)
    _RECORDING.append({})
    try:
        module(images, train=False)
        return _RECORDING[-1]
    finally:
        _RECORDING.pop()


def bn_layers(model: VisionModel, params, stats, images: jax.Array) -> list[str]:
    """Paths of the model's BatchNorm modules in the order the forward pass reaches them."""
    shapes = jax.eval_shape(functools.partial(_bn_inputs, model), params, stats, images)
    return list(shapes)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _batch_moments(model, layer, params, stats, images, valid) -> BatchNormMoments:
    x = _bn_inputs(model, params, stats, images)[layer].astype(jnp.float32)
    w = jnp.broadcast_to(valid.reshape((-1,) + (1,) * (x.ndim - 1)), x.shape[:-1] + (1,))
    axes = tuple(range(x.ndim - 1))
    count = jnp.sum(w)
    mean = jnp.sum(w * x, axis=axes) / jnp.maximum(count, 1.0)
    var = jnp.sum(w * (x - mean) ** 2, axis=axes) / jnp.maximum(count, 1.0)
    return BatchNormMoments(count, mean, var)


def client_moments(
    model: VisionModel,
    layer: str,
    params,
    stats,
    images: np.ndarray | jax.Array,
    batch_size: int = 512,
) -> BatchNormMoments:
    """Moments of BatchNorm ``layer``'s input over ``images`` (one client's data), in inference
    mode (every other BatchNorm uses ``stats``); batches are merged with :func:`pool`."""
    parts = []
    for start in range(0, len(images), batch_size):
        chunk = jnp.asarray(images[start : start + batch_size])
        pad = batch_size - len(chunk)
        valid = jnp.arange(batch_size) < len(chunk)
        chunk = jnp.pad(chunk, [(0, pad)] + [(0, 0)] * (chunk.ndim - 1))
        parts.append(_batch_moments(model, layer, params, stats, chunk, valid.astype(jnp.float32)))
    return pool(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *parts))


def pooled_statistics(
    model: VisionModel,
    params,
    stats,
    client_images: list[np.ndarray],
    batch_size: int = 512,
) -> tuple[Any, int]:
    """BatchNorm statistics of the union of the clients' data, estimated layer by layer.

    Args:
      model: the vision model.
      params: the (sparse) params whose statistics are re-estimated.
      stats: the statistics to start from (their structure; values are replaced).
      client_images: each client's images.
      batch_size: images per forward pass on a client.

    Returns:
      ``(stats, bytes_up)``: the pooled statistics and the bytes the clients sent (three float32
      per channel and one count per layer and client).
    """
    if not client_images:
        raise ValueError("pooled_statistics needs at least one client")
    layers = bn_layers(model, params, stats, jnp.asarray(client_images[0][:1]))
    bytes_up = 0
    for layer in layers:
        per_client = [
            client_moments(model, layer, params, stats, x, batch_size) for x in client_images
        ]
        pooled = pool(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per_client))
        flat = flat_leaves(stats)
        if f"{layer}/mean" not in flat:
            raise ValueError(f"stats has no {layer}/mean; its keys look like {list(flat)[:3]}")
        stats = set_leaves(stats, {f"{layer}/mean": pooled.mean, f"{layer}/var": pooled.var})
        bytes_up += len(client_images) * (4 + 2 * 4 * int(pooled.mean.size))
    return stats, bytes_up


# Old names, kept for a while: each warns and gives the new one.
__getattr__ = renamed(__name__, {"Moments": "BatchNormMoments"})
