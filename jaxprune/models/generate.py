"""Greedy decoding, the simple way: no KV cache, one compiled forward pass reused for every step.

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
