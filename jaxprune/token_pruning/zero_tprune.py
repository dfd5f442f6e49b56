"""Zero-TPrune (Wang, Dedhia and Jha, CVPR 2024): training-free token pruning from the attention
graph.

One pruning layer between two blocks reads the attention probabilities ``A`` (rows: queries,
summing to one) and the keys of the block before it, and removes tokens in the paper's order
**I′ → S → I**:

- **I′ (pre-ranking)**: one step of the weighted PageRank below; it ranks tokens, prunes nothing.
- **S-stage (similarity)**: the patch tokens are split by that ranking into the less important
  half ``A`` and the more important half ``B`` ("sequential-U" partition); every token of ``A``
  is matched to its most similar token of ``B`` (cosine similarity of the keys), and the ``r_s``
  tokens of ``A`` with the most similar matches are dropped. Running S before I keeps a large
  group of similar unimportant tokens (background) from voting each other up in the I-stage.
- **I-stage (importance)**: weighted PageRank on the attention graph of the tokens left (rows
  renormalised), ``s ← Aᵀ s`` for a number of iterations that depends on the layer (paper: 30–50
  in the first three layers, 5–10 in the middle, 1 in the last three); per-head scores are
  aggregated by root-mean-square ("emphasizing informative region") over the heads whose score
  variance lies in ``[v_min, v_max]`` (variance-based head filter); the ``r_i`` least important
  patch tokens are dropped.

The CLS token starts with ``sqrt(N)`` times the score of the others (the paper's default; uniform
with ``uniform_init=True``, the paper's "Zero-TPrune-uni") and, like every prefix token, is never
dropped. There is no official code; choices the paper leaves open are marked "(ours)".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.token_pruning.select import keep_patches, keep_top, submatrix

# The variance-based head filter's range (paper: [0.01, 0.7]). The paper's score scale is not
# stated; we measure the variance of each head's patch scores divided by their mean (ours), which
# makes the range independent of the token count.
VARIANCE_RANGE = (0.01, 0.7)


def default_iterations(layer: int, num_layers: int) -> int:
    """PageRank iterations for the attention of block ``layer``: 30 in the first three blocks, 1 in
    the last three, 5 between (the low ends of the paper's 30–50 / 5–10 / 1)."""
    if layer < 3:
        return 30
    if layer >= num_layers - 3:
        return 1
    return 5


def weighted_pagerank(attn: jax.Array, init: jax.Array, iterations: int) -> jax.Array:
    """``iterations`` steps of ``s ← Aᵀ s``: a token's score is the attention it receives, weighted
    by the scores of the tokens that pay it.

    Args:
      attn: ``(..., n, n)`` row-stochastic attention (``attn[i, j]``: query ``i`` on key ``j``).
      init: ``(..., n)`` initial scores.
      iterations: number of steps (static).

    Returns:
      ``(..., n)`` scores; their sum is preserved (``A`` is row-stochastic).
    """
    attn = attn.astype(jnp.float32)
    step = lambda _, s: jnp.einsum("...qk,...q->...k", attn, s)
    return jax.lax.fori_loop(0, iterations, step, init.astype(jnp.float32))


def initial_scores(shape: tuple[int, ...], uniform: bool = False) -> jax.Array:
    """Scores ``shape[:-1] + (n,)`` summing to one: uniform, or CLS (token 0) ``sqrt(n)`` times the
    others."""
    n = shape[-1]
    s = jnp.ones((n,), jnp.float32)
    if not uniform:
        s = s.at[0].set(jnp.sqrt(jnp.float32(n)))
    return jnp.broadcast_to(s / s.sum(), shape)


def aggregate_heads(
    scores: jax.Array, prefix: int, variance_range: tuple[float, float] = VARIANCE_RANGE
) -> jax.Array:
    """Per-head scores ``(batch, heads, n)`` → ``(batch, n)``: root-mean-square over the heads that
    pass the variance filter (all heads if none passes, ours: a mean over no head is undefined)."""
    patches = scores[..., prefix:]
    variance = (patches / patches.mean(-1, keepdims=True)).var(-1)
    lo, hi = variance_range
    keep = (variance >= lo) & (variance <= hi)
    keep = jnp.where(keep.any(-1, keepdims=True), keep, True).astype(jnp.float32)
    mean_square = (keep[..., None] * scores**2).sum(-2) / keep.sum(-1, keepdims=True)
    return jnp.sqrt(mean_square)


def importance(
    attn: jax.Array,
    prefix: int,
    iterations: int,
    *,
    uniform_init: bool = False,
    variance_range: tuple[float, float] = VARIANCE_RANGE,
) -> jax.Array:
    """Token importance ``(batch, n)`` from attention ``(batch, heads, n, n)``: weighted PageRank
    per head, then the filtered root-mean-square over heads."""
    init = initial_scores(attn.shape[:-1], uniform_init)
    return aggregate_heads(weighted_pagerank(attn, init, iterations), prefix, variance_range)


def similarity_keep(keys: jax.Array, scores: jax.Array, drop: int, prefix: int) -> jax.Array:
    """S-stage: indices ``(batch, m - drop)`` of the patch tokens kept, in increasing order.

    Args:
      keys: ``(batch, n, d)`` keys of all tokens.
      scores: ``(batch, n)`` importance used for the partition.
      drop: tokens to remove, at most ``m // 2`` (the size of the less important half).
      prefix: leading tokens that take no part.
    """
    k = keys[:, prefix:].astype(jnp.float32)
    k = k / jnp.maximum(jnp.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
    b, m = k.shape[:2]
    order = jnp.argsort(scores[:, prefix:], axis=-1, stable=True)
    half = m // 2
    group_a, group_b = order[:, :half], order[:, half:]
    ka = jnp.take_along_axis(k, group_a[..., None], axis=1)
    kb = jnp.take_along_axis(k, group_b[..., None], axis=1)
    best = jnp.einsum("bad,bcd->bac", ka, kb).max(-1)
    # Tokens of B, and of A with a weak match, are kept: score -similarity, +inf for B.
    keep_score = jnp.full((b, m), jnp.inf).at[jnp.arange(b)[:, None], group_a].set(-best)
    return keep_top(keep_score, m - drop)


def reduce(
    x: jax.Array,
    taps: dict,
    keep: int,
    *,
    prefix: int,
    layer: int,
    num_layers: int,
    iterations: int | None = None,
    similarity_share: float = 0.5,
    uniform_init: bool = False,
    variance_range: tuple[float, float] = VARIANCE_RANGE,
    **_,
) -> tuple[jax.Array, None]:
    """One Zero-TPrune layer: keeps ``keep`` patch tokens of ``x`` ``(batch, n, d)``.

    Args:
      taps: the previous block's ``attn`` and ``keys``.
      iterations: I-stage PageRank steps; default :func:`default_iterations`.
      similarity_share: the part of the removed tokens the S-stage removes (ours: the paper does
        not give the split), capped at half of the patch tokens.
    """
    attn, keys = taps["attn"], taps["keys"]
    b, n = x.shape[:2]
    m = n - prefix
    drop = m - keep
    by_similarity = min(int(round(drop * similarity_share)), m // 2)
    by_importance = drop - by_similarity
    idx = jnp.broadcast_to(jnp.arange(m), (b, m))
    opts = dict(uniform_init=uniform_init, variance_range=variance_range)
    if by_similarity:
        pre = importance(attn, prefix, 1, **opts)
        idx = similarity_keep(keys, pre, by_similarity, prefix)
    if by_importance:
        tokens = jnp.concatenate(
            [jnp.broadcast_to(jnp.arange(prefix), (b, prefix)), idx + prefix], 1
        )
        sub = submatrix(attn.astype(jnp.float32), tokens)
        sub = sub / sub.sum(-1, keepdims=True)
        steps = iterations if iterations is not None else default_iterations(layer, num_layers)
        scores = importance(sub, prefix, steps, **opts)
        idx = jnp.take_along_axis(idx, keep_top(scores[:, prefix:], keep), axis=1)
    return keep_patches(x, prefix, idx), None


__all__ = [
    "VARIANCE_RANGE",
    "aggregate_heads",
    "default_iterations",
    "importance",
    "initial_scores",
    "reduce",
    "similarity_keep",
    "weighted_pagerank",
]
