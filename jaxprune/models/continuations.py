"""Log-likelihoods of continuations after contexts that run through the blocks once.

Several requests that share a context (a multiple-choice question's choices) need that context's
keys and values only once: the distinct contexts run through a block, keep that block's keys and
values (a :class:`~jaxprune.models.kv_cache.KVCache`), and each row's continuation then runs
through the same block alone, at its true positions (each row's cache offset is its context's
length), attending to its context and to itself. Every log-probability is thus conditioned on
exactly the tokens a whole ``context + continuation`` row conditions it on.

The blocks run one at a time under ``jit`` with the block index traced, so blocks of one shape
share a compiled step. A model whose attention does not read the cache (learned absolute
positions, OPT) cannot do this: :meth:`LanguageModel.shares_contexts` tells. The zero-shot
scorer plans the batches (:mod:`jaxprune.eval.shared_context`) and calls
:meth:`LanguageModel.continuation_sums`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxprune.eval.shared_context as shared_context
import jaxprune.eval.zeroshot as zeroshot
import jaxprune.models.kv_cache as kv_cache


def reads_cache(model: Any, params: Any) -> bool:
    """Whether every block's attention reads the cache and positions come only from the blocks
    (not OPT's learned positions, added by its embedding)."""
    if "embed_positions" in params:
        return False

    def keys(p):
        cache = kv_cache.KVCache([], [], jnp.int32(0), 1)
        with kv_cache.decoding(cache):
            hidden = model.embed(p, jnp.zeros((1, 1), jnp.int32))
            for i in range(model.num_blocks):
                hidden = model.block(model.block_params(p, i), hidden, index=i)
        return cache.keys

    return len(jax.eval_shape(keys, params)) == model.num_blocks


@functools.partial(jax.jit, static_argnames="model")
def _embed(model: Any, params: Any, tokens: jax.Array) -> jax.Array:
    return model.embed(params, tokens)


@functools.partial(jax.jit, static_argnames="model")
def _context_block(model: Any, block_params: Any, hidden: jax.Array, index: jax.Array):
    """The contexts through one block: its output and the block's keys and values."""
    cache = kv_cache.KVCache([], [], jnp.int32(0), hidden.shape[1])
    with kv_cache.decoding(cache):
        out = model.block(block_params, hidden, index=index)
    return out, cache.keys[0], cache.values[0]


@functools.partial(jax.jit, static_argnames="length")
def _per_row(keys: jax.Array, values: jax.Array, owners: jax.Array, length: int):
    """Row ``r``'s context's keys and values (context ``owners[r]``), padded to ``length``."""
    pad = ((0, 0), (0, length - keys.shape[1]), (0, 0), (0, 0))
    return jnp.pad(keys[owners], pad), jnp.pad(values[owners], pad)


@functools.partial(jax.jit, static_argnames="model")
def _continuation_block(
    model: Any,
    block_params: Any,
    hidden: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    starts: jax.Array,
    index: jax.Array,
) -> jax.Array:
    """The continuations through one block after their contexts' keys and values: row ``r``'s
    context fills its first ``starts[r]`` slots."""
    width = hidden.shape[1]
    cache = kv_cache.KVCache([keys], [values], starts, keys.shape[1])
    positions = cache.query_positions(width)
    with kv_cache.decoding(cache):
        return model.block(block_params, hidden, index=index, positions=positions)


@jax.jit
def _last(hidden: jax.Array, lengths: jax.Array, owners: jax.Array) -> jax.Array:
    """Per row, its context's last hidden state ``(rows, 1, dim)``."""
    return jnp.take_along_axis(hidden, (lengths - 1)[:, None, None], axis=1)[owners]


@functools.partial(jax.jit, static_argnames="model")
def _sums(
    model: Any,
    params: Any,
    last: jax.Array,
    following: jax.Array | None,
    targets: jax.Array,
    counts: jax.Array,
) -> jax.Array:
    """Per row, the summed log-probabilities of ``targets[r, :counts[r]]``, the first predicted
    from ``last``, the others from ``following``."""
    scored = last if following is None else jnp.concatenate([last, following], axis=1)
    keep = jnp.arange(targets.shape[1]) < counts[:, None]
    return zeroshot.logprob_sums(model.head(params, scored), targets, keep)


def continuation_sums(
    model: Any,
    params: Any,
    contexts: np.ndarray,
    context_lengths: np.ndarray,
    owners: np.ndarray,
    inputs: np.ndarray,
    targets: np.ndarray,
    counts: np.ndarray,
) -> np.ndarray:
    """Per row ``r``, the summed log-probabilities of ``targets[r, :counts[r]]`` (float64).

    Row ``r`` continues context ``owners[r]``, ``contexts[c, :context_lengths[c]]`` (right
    padding), and feeds ``inputs[r]`` (its continuation but the last token; any width, 0 when
    every continuation is one token). The first target is predicted from the context's last
    position, the others from the row's own. Compiled shapes: a block of contexts per (contexts,
    context length); a block of continuations per (rows, width, key slots), the slots rounded up
    to a power of two; the head per (rows, width).
    """
    lengths = jnp.asarray(context_lengths)
    owners = jnp.asarray(owners)
    starts = lengths[owners]
    hidden = _embed(model, params, jnp.asarray(contexts))
    width = inputs.shape[1]
    following = _embed(model, params, jnp.asarray(inputs)) if width else None
    slots = shared_context.power_of_two(contexts.shape[1] + width)
    for i in range(model.num_blocks):
        block_params = model.block_params(params, i)
        index = jnp.int32(i)
        hidden, keys, values = _context_block(model, block_params, hidden, index)
        if following is not None:
            keys, values = _per_row(keys, values, owners, slots)
            following = _continuation_block(
                model, block_params, following, keys, values, starts, index
            )
    last = _last(hidden, lengths, owners)
    sums = _sums(model, params, last, following, jnp.asarray(targets), jnp.asarray(counts))
    return np.asarray(sums, np.float64)


__all__ = ["continuation_sums", "reads_cache"]
