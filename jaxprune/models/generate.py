"""Decoding with a key/value cache: greedy or sampled, one compiled step per buffer length.

Greedy (:func:`greedy_generate`) or sampled (:func:`sample_generate`: temperature, top-k,
top-p, a seed — the same seed gives the same text).

The prompt runs through the model once (the prefill), filling a :class:`~.kv_cache.KVCache`;
every new token then runs alone through the blocks, attending to the cached keys and values, so
the cost grows linearly with the length. Buffers have a fixed length (prompt + new tokens,
rounded up to a multiple of ``_BUCKET``), so ``jit`` compiles once per buffer length; right
padding is harmless because attention is causal. A model whose attention does not read the cache
(a family adding learned absolute positions in its embedding, OPT) decodes by re-running the
whole buffer for every token, with the same tokens.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import jaxprune.models.kv_cache as kv_cache
from jaxprune.models.base import LanguageModel, Params
from jaxprune.models.continuations import reads_cache

_BUCKET = 32


def _forward(model: LanguageModel, params: Params, tokens: jax.Array, positions: jax.Array):
    hidden = model.embed(params, tokens)
    for i in range(model.num_blocks):
        hidden = model.block(model.block_params(params, i), hidden, index=i, positions=positions)
    return model.head(params, hidden)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _prefill(model: LanguageModel, params: Params, tokens: jax.Array, length: int):
    """Logits of the (padded) prompt ``(1, P)`` and the cache it fills, of ``length`` slots."""
    cache = kv_cache.KVCache([], [], jnp.int32(0), length)
    with kv_cache.decoding(cache):
        logits = _forward(model, params, tokens, jnp.arange(tokens.shape[1]))
    return logits[0].astype(jnp.float32), cache.keys, cache.values


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(4, 5))
def _decode(model, params, token: jax.Array, position: jax.Array, keys: list, values: list):
    """The logits after ``token`` at ``position`` given the cache; the updated cache."""
    cache = kv_cache.KVCache(keys, values, position, keys[0].shape[1])
    with kv_cache.decoding(cache):
        logits = _forward(model, params, token.reshape(1, 1), position[None])
    return logits[0, 0].astype(jnp.float32), cache.keys, cache.values


class _Decoder:
    """Logits of the next position, one token at a time: cached, or the whole buffer again."""

    def __init__(self, model: LanguageModel, params: Params, prompt: list[int], total: int):
        self.model, self.params = model, params
        padded = -(-total // _BUCKET) * _BUCKET
        self.buffer = np.zeros(padded, dtype=np.int32)
        self.buffer[: len(prompt)] = prompt
        self.length = len(prompt)
        self.cached = reads_cache(model, params)
        if self.cached:
            width = -(-len(prompt) // _BUCKET) * _BUCKET
            tokens = jnp.asarray(self.buffer[None, :width])
            logits, self.keys, self.values = _prefill(model, params, tokens, padded)
            self.logits = logits[len(prompt) - 1]

    def next_logits(self) -> jax.Array:
        if self.cached:
            return self.logits
        return _last_logits(self.model, self.params, jnp.asarray(self.buffer), self.length)

    def append(self, token: int) -> None:
        self.buffer[self.length] = token
        if self.cached:
            self.logits, self.keys, self.values = _decode(
                self.model,
                self.params,
                jnp.int32(token),
                jnp.int32(self.length),
                self.keys,
                self.values,
            )
        self.length += 1


@functools.partial(jax.jit, static_argnums=0)
def _last_logits(model: LanguageModel, params: Params, buffer: jax.Array, length):
    return model.logits(params, buffer[None])[0][length - 1].astype(jnp.float32)


def greedy_generate(
    model: LanguageModel,
    params: Params,
    prompt_tokens: list[int],
    max_new_tokens: int,
    eos_token_id: int | None = None,
) -> list[int]:
    """Extends ``prompt_tokens`` by repeatedly appending the most likely next token.

    Args:
      model: the model applying ``params``.
      params: its params.
      prompt_tokens: at least one token id.
      max_new_tokens: how many tokens to generate at most.
      eos_token_id: if given, generation stops after this token is produced.

    Returns:
      The generated tokens only (not the prompt), at most ``max_new_tokens`` of them.

    Raises:
      ValueError: empty prompt or negative ``max_new_tokens``.
    """
    if not prompt_tokens:
        raise ValueError("greedy_generate needs at least one prompt token (e.g. the BOS id)")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    generated: list[int] = []
    if max_new_tokens == 0:
        return generated
    decoder = _Decoder(model, params, list(prompt_tokens), len(prompt_tokens) + max_new_tokens)
    for step in range(max_new_tokens):
        generated.append(int(jnp.argmax(decoder.next_logits())))
        if generated[-1] == eos_token_id or step == max_new_tokens - 1:
            break
        decoder.append(generated[-1])
    return generated


@functools.partial(jax.jit, static_argnums=3)
def sample_from(logits: jax.Array, key: jax.Array, temperature, top_k: int, top_p) -> jax.Array:
    """A token drawn from next-token ``logits`` (one row).

    Logits are divided by ``temperature``; ``top_k`` > 0 keeps the ``k`` most likely tokens and
    ``top_p`` < 1 the smallest set whose probability reaches ``top_p`` (nucleus sampling).
    """
    logits = logits.astype(jnp.float32) / temperature
    if top_k > 0:
        kth = jnp.sort(logits)[-top_k]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    order = jnp.argsort(-logits)
    probs = jax.nn.softmax(logits[order])
    # Keep a token if the mass strictly before it is below top_p (the first always stays).
    keep_sorted = jnp.cumsum(probs) - probs < top_p
    keep = jnp.zeros_like(keep_sorted).at[order].set(keep_sorted)
    return jax.random.categorical(key, jnp.where(keep, logits, -jnp.inf))


def sample_generate(
    model: LanguageModel,
    params: Params,
    prompt_tokens: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    eos_token_id: int | None = None,
) -> list[int]:
    """Extends ``prompt_tokens`` by sampling each next token (see :func:`sample_from`).

    Args:
      model, params, prompt_tokens, max_new_tokens, eos_token_id: as in :func:`greedy_generate`.
      temperature: > 0; lower is closer to greedy.
      top_k: sample among the ``k`` most likely tokens (0: all).
      top_p: sample from the smallest set of tokens whose probability reaches ``top_p`` (1: all).
      seed: the random seed; the same seed gives the same tokens.

    Raises:
      ValueError: empty prompt, negative ``max_new_tokens``, or out-of-range sampling options.
    """
    if not prompt_tokens:
        raise ValueError("sample_generate needs at least one prompt token (e.g. the BOS id)")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (use greedy_generate for 0), got {temperature}")
    if not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"need 0 < top_p <= 1 and top_k >= 0, got top_p={top_p}, top_k={top_k}")
    vocab = getattr(model.config, "vocab_size", None)
    if vocab is not None and top_k > vocab:
        raise ValueError(f"top_k={top_k} is larger than the vocabulary ({vocab} tokens)")
    generated: list[int] = []
    if max_new_tokens == 0:
        return generated
    keys = jax.random.split(jax.random.key(seed), max_new_tokens)
    decoder = _Decoder(model, params, list(prompt_tokens), len(prompt_tokens) + max_new_tokens)
    for step in range(max_new_tokens):
        logits = decoder.next_logits()
        token = sample_from(logits, keys[step], jnp.float32(temperature), int(top_k), top_p)
        generated.append(int(token))
        if generated[-1] == eos_token_id or step == max_new_tokens - 1:
            break
        decoder.append(generated[-1])
    return generated
