"""Decoding, the simple way: no KV cache, one compiled forward pass reused for every step.

Greedy (:func:`greedy_generate`) or sampled (:func:`sample_generate`: temperature, top-k,
top-p, a seed — the same seed gives the same text).

The token buffer has a fixed length (prompt + new tokens, rounded up to a multiple of
``_BUCKET``), so ``jit`` compiles once per buffer length. Right padding is harmless because
attention is causal: the logits at position ``p`` never see tokens after ``p``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.models.base import LanguageModel, Params

_BUCKET = 32


@functools.partial(jax.jit, static_argnums=0)
def next_token(model: LanguageModel, params: Params, buffer: jax.Array, length: jax.Array):
    """The greedy next token after the first ``length`` tokens of ``buffer`` (a padded bucket).

    One compiled program serves every prompt length within a bucket size.
    """
    logits = model.logits(params, buffer[None])[0]
    return jnp.argmax(logits[length - 1].astype(jnp.float32))


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
    total = len(prompt_tokens) + max_new_tokens
    padded = -(-total // _BUCKET) * _BUCKET
    buffer = np.zeros(padded, dtype=np.int32)
    buffer[: len(prompt_tokens)] = prompt_tokens
    buffer = jnp.asarray(buffer)
    generated: list[int] = []
    for length in range(len(prompt_tokens), total):
        token = next_token(model, params, buffer, jnp.int32(length))
        buffer = buffer.at[length].set(token)
        generated.append(int(token))
        if generated[-1] == eos_token_id:
            break
    return generated


@functools.partial(jax.jit, static_argnums=(0, 6))
def sampled_token(
    model: LanguageModel,
    params: Params,
    buffer: jax.Array,
    length: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    top_k: int,
    top_p: jax.Array,
):
    """A next token drawn from the model's distribution after the first ``length`` tokens.

    Logits are divided by ``temperature``; ``top_k`` > 0 keeps the ``k`` most likely tokens and
    ``top_p`` < 1 the smallest set whose probability reaches ``top_p`` (nucleus sampling).
    """
    logits = model.logits(params, buffer[None])[0][length - 1].astype(jnp.float32) / temperature
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
    """Extends ``prompt_tokens`` by sampling each next token (see :func:`sampled_token`).

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
    total = len(prompt_tokens) + max_new_tokens
    padded = -(-total // _BUCKET) * _BUCKET
    buffer = np.zeros(padded, dtype=np.int32)
    buffer[: len(prompt_tokens)] = prompt_tokens
    buffer = jnp.asarray(buffer)
    keys = jax.random.split(jax.random.key(seed), max(max_new_tokens, 1))
    generated: list[int] = []
    for step, length in enumerate(range(len(prompt_tokens), total)):
        token = sampled_token(
            model,
            params,
            buffer,
            jnp.int32(length),
            keys[step],
            jnp.float32(temperature),
            int(top_k),
            jnp.float32(top_p),
        )
        buffer = buffer.at[length].set(token)
        generated.append(int(token))
        if generated[-1] == eos_token_id:
            break
    return generated
