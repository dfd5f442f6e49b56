"""Perplexity of a causal LM over non-overlapping token windows.

Every window of ``T`` tokens contributes its ``T - 1`` next-token predictions; the result is
``exp`` of the mean negative log-likelihood over all of them (the SparseGPT/Wanda protocol). The
log-softmax runs in float32 whatever the model's dtype.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class PerplexityResult:
    """``ppl = exp(nll)``; ``nll`` is the mean over ``tokens`` predicted tokens."""

    ppl: float
    nll: float
    tokens: int


@functools.partial(jax.jit, static_argnames="model")
def _batch_nll(model: Any, params: Any, tokens: jax.Array, weights: jax.Array) -> jax.Array:
    """Sum of next-token NLLs of the windows with weight 1 (padding windows have weight 0)."""
    logits = model.logits(params, tokens[:, :-1]).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return -jnp.sum(picked.sum(axis=1) * weights)


def perplexity(
    model: Any,
    params: Any,
    windows: np.ndarray | jax.Array,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of ``model`` with ``params`` (dense or pruned) on ``windows``.

    Args:
      model: a :class:`jaxprune.models.LanguageModel` (anything with ``logits(params, tokens)``).
      params: its params pytree.
      windows: int tokens ``(n, seqlen)``, e.g. from :func:`jaxprune.data.load_windows`.
      batch_size: windows per forward pass. A last partial batch is padded with weight-0 windows,
        so one program is compiled for every batch.
      progress: show a progress bar (pass ``False`` to silence it).

    Returns:
      :class:`PerplexityResult`.

    Raises:
      ValueError: windows that are empty, not a 2-D integer array, or out of the vocabulary.
      FloatingPointError: the mean NLL is not finite (NaN/inf in the params).
    """
    windows = np.asarray(windows)
    if windows.ndim != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
        raise ValueError(
            f"windows must be a non-empty (n, seqlen) array with seqlen >= 2, got {windows.shape}"
        )
    if not np.issubdtype(windows.dtype, np.integer):
        raise ValueError(f"windows must hold integer token ids, got dtype {windows.dtype}")
    # Out-of-range ids would be clamped silently inside the jitted gather and give a wrong number.
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if windows.min() < 0 or (vocab is not None and windows.max() >= vocab):
        raise ValueError(
            f"windows hold token ids in [{windows.min()}, {windows.max()}], outside the model's "
            f"vocabulary [0, {vocab}); were they made with this model's tokenizer?"
        )
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n, seqlen = windows.shape
    bs = min(batch_size, n)
    starts = range(0, n, bs)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="perplexity", unit="batch", leave=False)
    total = 0.0  # float64 on the host: many batch sums of ~1e4 each
    for lo in starts:
        batch = windows[lo : lo + bs]
        weights = np.ones(bs, np.float32)
        if batch.shape[0] < bs:
            weights[batch.shape[0] :] = 0.0
            pad = np.repeat(batch[-1:], bs - batch.shape[0], axis=0)
            batch = np.concatenate([batch, pad])
        total += float(
            _batch_nll(model, params, jnp.asarray(batch, jnp.int32), jnp.asarray(weights))
        )
    tokens = n * (seqlen - 1)
    nll = total / tokens
    if not np.isfinite(nll):
        raise FloatingPointError(
            f"perplexity is not finite (mean NLL {nll}); the params hold NaN or inf values"
        )
    return PerplexityResult(float(np.exp(nll)), nll, tokens)
