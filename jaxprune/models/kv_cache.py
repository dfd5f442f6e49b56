"""A key/value cache for decoding: each new token attends to the stored keys and values.

Decoding without a cache runs the whole sequence through the model for every new token (cost
quadratic in the length); with it, a step runs one token through the blocks and reads the keys
and values of the earlier ones (cost linear in the length).

The cache is a trace-time context, so the families' attention code needs no cache arguments: a
decoding function enters :func:`decoding` inside ``jit``, and every attention call of the forward
pass (in block order) hands its new keys and values to :meth:`KVCache.extend`, which writes them
at the sequence's current offset and returns the whole buffer with each slot's position. Slots
not written yet have positions after every query, so the causal mask hides them. The offset is
one for the batch (decoding) or one per row (scoring continuations of contexts of different
lengths, :mod:`jaxprune.models.continuations`): the queries' positions are then ``(batch, new)``.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp
from jax import lax

_ACTIVE: contextvars.ContextVar[KVCache | None] = contextvars.ContextVar("kv_cache", default=None)


class KVCache:
    """The keys and values of every layer, ``(batch, length, kv_heads, head_dim)`` each.

    Attributes:
      keys, values: one buffer per layer (``None`` until the first pass creates it).
      start: the position of the first token of the current pass: a traced int32, or one per
        row ``(batch,)``.
      length: the buffer length (static).
      layers_seen: how many attention calls this pass made (one per block when every block's
        attention reads the cache).
    """

    def __init__(self, keys: list, values: list, start: jax.Array, length: int):
        self.keys, self.values = list(keys), list(values)
        self.start, self.length = start, length
        self.layers_seen = 0

    def extend(self, k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Stores this layer's new ``k``/``v`` at ``start``; returns the buffers and positions."""
        i = self.layers_seen
        self.layers_seen += 1
        if i == len(self.keys):  # the first pass creates the buffers
            shape = (k.shape[0], self.length, *k.shape[2:])
            self.keys.append(jnp.zeros(shape, k.dtype))
            self.values.append(jnp.zeros(shape, v.dtype))
        self.keys[i] = self._write(self.keys[i], k)
        self.values[i] = self._write(self.values[i], v)
        return self.keys[i], self.values[i], jnp.arange(self.length)

    def _write(self, buffer: jax.Array, new: jax.Array) -> jax.Array:
        new = new.astype(buffer.dtype)
        if jnp.ndim(self.start) == 0:
            return lax.dynamic_update_slice(buffer, new, (0, self.start, 0, 0))
        row = lambda b, n, s: lax.dynamic_update_slice(b, n, (s, 0, 0))  # noqa: E731
        return jax.vmap(row)(buffer, new, self.start)

    def query_positions(self, t: int) -> jax.Array:
        """Positions of this pass's ``t`` new tokens: ``(t,)``, or ``(batch, t)`` per row."""
        return jnp.asarray(self.start)[..., None] + jnp.arange(t)


def visible_mask(query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
    """Causal visibility ``key <= query``, shaped to broadcast over ``(b, heads, group, q, k)``
    logits: ``(q, k)`` for shared positions, ``(b, 1, 1, q, k)`` for per-row ones."""
    visible = key_positions[None, :] <= query_positions[..., :, None]
    return visible[:, None, None] if visible.ndim == 3 else visible


def active() -> KVCache | None:
    """The cache of the decoding pass being traced, or ``None``."""
    return _ACTIVE.get()


@contextlib.contextmanager
def decoding(cache: KVCache):
    """Within this context (entered inside the traced function), attention reads ``cache``."""
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)


def cached_attention(q, k, v, scale, cache: KVCache) -> jax.Array:
    """Causal attention of the new queries over the cache (logits and softmax in float32)."""
    keys, values, key_positions = cache.extend(k, v)
    b, t, heads, d = q.shape
    kv_heads = keys.shape[2]
    q = q.reshape(b, t, kv_heads, heads // kv_heads, d)
    wide = jnp.promote_types(q.dtype, jnp.float32)  # float32 logits, float64 kept
    logits = jnp.einsum("bqhgd,bkhd->bhgqk", q, keys).astype(wide)
    logits = logits * (d**-0.5 if scale is None else scale)
    visible = visible_mask(cache.query_positions(t), key_positions)
    logits = jnp.where(visible, logits, jnp.finfo(wide).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(values.dtype)
    return jnp.einsum("bhgqk,bkhd->bqhgd", probs, values).reshape(b, t, heads, d)


__all__ = ["KVCache", "active", "cached_attention", "decoding", "visible_mask"]
