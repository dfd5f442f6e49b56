"""Where the params live during a prune: as given, on a mesh, or on the host (``offload``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from jaxprune.models.base import LanguageModel, Params
from jaxprune.sharding import HostShards, Layout


class Placement:
    """Where the params live during a prune: as given, on a mesh, or on the host (``offload``).

    With ``offload`` the params are host NumPy arrays (in a multi-process run: each process's own
    shards, :class:`jaxprune.sharding.HostShards`) and :meth:`blocks` puts one decoder block at a
    time on the devices, the next one already on its way while the current one is worked on.
    """

    def __init__(self, model: LanguageModel, layout: Layout | None, offload: bool):
        self.model = model
        self.layout = layout
        self.offload = offload

    def _put(self, tree: Any, prefix: str) -> Any:
        if self.layout is not None:
            return self.layout.put(tree, prefix)
        return jax.device_put(tree)

    def initial(self, params: Params) -> Params:
        if self.offload:
            return self.to_host(params)
        if self.layout is not None:
            return self.layout.put(params)
        return params

    def leaf(self, path: str, value: Any) -> jax.Array:
        """A leaf of the (initial) params, on the devices."""
        return self._put(value, path) if self.offload else value

    def outer(self, params: Params) -> Params:
        """``params`` for the embedding: everything but the blocks on the devices.

        The blocks may stay host arrays: a jit-compiled function does not copy inputs it does not
        use. A multi-process run's host shards stand in as zero-stride NumPy arrays of their shape.
        """
        if not self.offload:
            return params
        blocks = jax.tree.map(_stand_in, params[self.model.BLOCKS])
        return {
            k: blocks if k == self.model.BLOCKS else self._put(v, f"{k}/")
            for k, v in params.items()
        }

    def blocks(self, params: Params) -> Iterator[Params]:
        """The params of blocks ``0, 1, …`` on the devices, block ``i + 1`` put before ``i``
        is returned, so that its copy (asynchronous where the platform allows) overlaps work."""
        n = self.model.num_blocks
        if not self.offload:
            yield from (self.model.block_params(params, i) for i in range(n))
            return
        upcoming = self._put(self.model.block_params(params, 0), self.model.block_prefix(0))
        for i in range(n):
            current = upcoming
            if i + 1 < n:
                nxt = self.model.block_params(params, i + 1)
                upcoming = self._put(nxt, self.model.block_prefix(i + 1))
            yield current

    def to_host(self, tree: Any) -> Any:
        """``tree`` in host memory with ``offload`` (see :meth:`Layout.to_host`), else as is."""
        if not self.offload:
            return tree
        return jax.device_get(tree) if self.layout is None else self.layout.to_host(tree)


def _stand_in(leaf: Any) -> Any:
    if isinstance(leaf, HostShards):
        return np.broadcast_to(np.zeros((), leaf.dtype), leaf.shape)
    return leaf
