"""Log-likelihoods of continuations with each context run through the blocks once.

A multiple-choice example's requests share their context (lm-evaluation-harness runs it again
for every choice). Here the distinct contexts of a batch run through a block once and keep that
block's keys and values (a :class:`~jaxprune.models.kv_cache.KVCache`); each request's
continuation then runs through the same block alone, at its true positions (each row's offset is
its context's length), attending to its context's keys and values and to its own. The first
continuation token is scored from the context's last position, the others from the
continuation's own positions, so every log-probability is conditioned on exactly the tokens the
harness conditions it on.

The blocks run one at a time under ``jit`` with the block index traced, so blocks of one shape
share a compiled step (:func:`batch_sums` lists the shapes). Contexts are
padded on the right to :func:`jaxprune.eval.zeroshot`'s lengths and continuations to multiples
of 16 tokens; the causal mask keeps padding from touching real positions. Models whose
attention does not read the cache (learned absolute positions, OPT) are not supported
(:func:`supported`); :func:`jaxprune.eval.zeroshot.loglikelihoods` scores them the plain way.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxprune.models.kv_cache as kv_cache
from jaxprune.models.generate import reads_cache

_NEEDS = ("embed", "block", "block_params", "head", "num_blocks")


def supported(model: Any, params: Any) -> bool:
    """Whether ``model`` runs block by block and every block's attention reads the cache."""
    return all(hasattr(model, name) for name in _NEEDS) and reads_cache(model, params)


class Batch(NamedTuple):
    """One pass: ``rows`` requests over their ``contexts`` distinct contexts.

    ``context_tokens[c, :context_lengths[c]]`` is context ``c`` (padding rows have length 1);
    row ``r`` continues context ``owners[r]``: it feeds ``inputs[r]`` (its continuation but the
    last token) and scores ``targets[r, :counts[r]]`` (its continuation; padding rows score none).
    """

    rows: np.ndarray
    context_tokens: np.ndarray
    context_lengths: np.ndarray
    owners: np.ndarray
    inputs: np.ndarray
    targets: np.ndarray
    counts: np.ndarray


def _width(n: int) -> int:
    """Continuation inputs per row: ``n`` rounded up to 1, 2, 4, a multiple of 4 up to 32, of 8
    up to 64, of 16 past (0 stays 0). Continuations are short (a few tokens on ARC), so a
    coarse step would mostly pad; one block compiles per width, which is cheap."""
    if n <= 4:
        return 0 if n == 0 else 1 << (n - 1).bit_length()
    step = 4 if n <= 32 else 8 if n <= 64 else 16
    return -(-n // step) * step


def _power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def batches(
    requests: Sequence[tuple[np.ndarray, np.ndarray]],
    indices: Sequence[int],
    size: int,
    padded_length,
) -> Iterator[Batch]:
    """Batches of ``size`` rows over ``requests[i]`` = (context ids, continuation ids), ``i`` in
    ``indices``: longest contexts first, the requests of one context next to each other.

    A batch's contexts are padded to ``padded_length(longest)`` tokens, its distinct contexts
    to a power of two (at most ``size`` of them are ever needed).
    """
    order = sorted(
        indices,
        key=lambda i: (-len(requests[i][0]), requests[i][0].tobytes(), -len(requests[i][1])),
    )
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        keys: dict[bytes, int] = {}
        owners = np.zeros(size, np.int32)
        for r, i in enumerate(rows):
            owners[r] = keys.setdefault(requests[i][0].tobytes(), len(keys))
        contexts = [requests[i][0] for i in rows]
        distinct = [contexts[list(owners[: len(rows)]).index(c)] for c in range(len(keys))]
        length = padded_length(max(len(c) for c in distinct))
        context_tokens = np.zeros((_power_of_two(len(distinct)), length), np.int32)
        context_lengths = np.ones(len(context_tokens), np.int32)
        for c, ids in enumerate(distinct):
            context_tokens[c, : len(ids)] = ids
            context_lengths[c] = len(ids)
        width = _width(max(len(requests[i][1]) for i in rows) - 1)
        inputs = np.zeros((size, width), np.int32)
        targets = np.zeros((size, width + 1), np.int32)
        counts = np.zeros(size, np.int32)
        for r, i in enumerate(rows):
            continuation = requests[i][1]
            inputs[r, : len(continuation) - 1] = continuation[:-1]
            targets[r, : len(continuation)] = continuation
            counts[r] = len(continuation)
        yield Batch(
            np.asarray(rows), context_tokens, context_lengths, owners, inputs, targets, counts
        )


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
    logp = jax.nn.log_softmax(model.head(params, scored).astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(jnp.arange(targets.shape[1]) < counts[:, None], picked, 0.0), axis=1)


def batch_sums(model: Any, params: Any, batch: Batch) -> np.ndarray:
    """The summed continuation log-likelihood of each row of ``batch`` (padding rows: 0).

    Compiled shapes: a block of contexts per (contexts, context length); a block of
    continuations per (rows, width, key slots), the slots rounded up to a power of two; the head
    per (rows, width).
    """
    lengths = jnp.asarray(batch.context_lengths)
    owners = jnp.asarray(batch.owners)
    starts = lengths[owners]
    hidden = _embed(model, params, jnp.asarray(batch.context_tokens))
    width = batch.inputs.shape[1]
    following = _embed(model, params, jnp.asarray(batch.inputs)) if width else None
    slots = _power_of_two(batch.context_tokens.shape[1] + width)
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
    targets, counts = jnp.asarray(batch.targets), jnp.asarray(batch.counts)
    return np.asarray(_sums(model, params, last, following, targets, counts), np.float64)


__all__ = ["Batch", "batch_sums", "batches", "supported"]
