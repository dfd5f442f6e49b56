"""FLAP: fluctuation-based adaptive structured pruning (An et al., AAAI 2024), retraining-free.

For every input channel ``j`` of a block's attention output projection and MLP output projection,
FLAP measures how much the channel's input **fluctuates** over the calibration tokens and how much
that moves the output: ``S_j = Var_t(x_tj) · ‖W_j,:‖²`` (the "WIFV" metric; the reference code
squares it once more for attention channels, and so do we). Scores are **standardised** per block
and module (``(S − mean) / std``), an attention head scores the mean of its channels, and one
ranking over all blocks' heads and channels removes the lowest until the parameter target is met
(an adaptive structure: blocks and modules end up with different widths).

**Bias compensation**: a removed channel's input is replaced by its calibration mean, which a
linear layer turns into a constant, so the output projection gains the bias
``b = Σ_{j removed} mean_j · W_j,:`` and the layer's mean output over the calibration tokens is
unchanged. LLaMA linears have no biases, so a compensated LLaMA gains them
(``config.with_output_biases()``).

Statistics are exact float32 per-feature means and variances over all calibration tokens, merged
batch by batch with Chan et al.'s pairwise update (no ``E[x²] − E[x]²`` cancellation).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.core.paths import get_leaf
from jaxprune.models.base import LanguageModel, Params
from jaxprune.structured.groups import BlockKeep, channels_of

__all__ = ["Fluctuation", "block_scores", "compensation", "fluctuations", "standardise"]


class Fluctuation(NamedTuple):
    """Per-feature token count, mean and sum of squared deviations (float32)."""

    count: jax.Array
    mean: jax.Array
    m2: jax.Array

    @classmethod
    def empty(cls, width: int) -> Fluctuation:
        zeros = jnp.zeros((width,), jnp.float32)
        return cls(jnp.zeros((), jnp.float32), zeros, zeros)

    def add(self, x: jax.Array) -> Fluctuation:
        """Merges the tokens of ``x`` (``(..., width)``) in (Chan, Golub & LeVeque's update)."""
        x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
        n_b = jnp.float32(x.shape[0])
        mean_b = x.mean(axis=0)
        m2_b = jnp.sum((x - mean_b) ** 2, axis=0)
        total = self.count + n_b
        delta = mean_b - self.mean
        mean = self.mean + delta * (n_b / total)
        m2 = self.m2 + m2_b + delta**2 * (self.count * n_b / total)
        return Fluctuation(total, mean, m2)

    @property
    def variance(self) -> jax.Array:
        """The (biased) variance of every feature over the tokens."""
        return self.m2 / jnp.maximum(self.count, 1.0)


@functools.partial(jax.jit, static_argnames=("model", "taps"))
def _step(block_params, hidden, stats, index, *, model, taps):
    # A traced index: one program serves every block, also where blocks differ by position.
    out, captured = model.block(block_params, hidden, capture=True, index=index)
    return out, tuple(s.add(captured[t]) for s, t in zip(stats, taps, strict=True))


def fluctuations(
    model: LanguageModel,
    params: Params,
    windows: np.ndarray,
    blocks: Iterable[int],
    taps: tuple[str, str],
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[int, tuple[Fluctuation, Fluctuation]]:
    """Statistics of the inputs of the two output projections, over the dense model's forward.

    Args:
      model, params: the dense model.
      windows: int tokens ``(n, seqlen)``.
      blocks: the blocks to measure.
      taps: the taps of the attention and MLP output projections (``("o_in", "down_in")``).
      batch_size: windows per forward pass (a divisor of ``n`` is used, so one program compiles).
      progress: show a progress bar.

    Returns:
      ``{block: (attention stats, MLP stats)}``.
    """
    windows = np.asarray(windows, np.int32)
    n = windows.shape[0]
    batch = max(b for b in range(1, min(batch_size, n) + 1) if n % b == 0)
    wanted = set(blocks)
    stats: dict[int, tuple[Fluctuation, ...]] = {}
    starts: Iterable[int] = range(0, n, batch)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="flap statistics", unit="batch", leave=False)
    for lo in starts:
        hidden = model.embed(params, jnp.asarray(windows[lo : lo + batch]))
        for i in range(max(wanted) + 1):
            block_params = model.block_params(params, i)
            if i not in stats:
                widths = [get_leaf(block_params, p)["kernel"].shape[0] for p in _outs(model)]
                stats[i] = tuple(Fluctuation.empty(w) for w in widths)
            hidden, stats[i] = _step(
                block_params, hidden, stats[i], jnp.int32(i), model=model, taps=taps
            )
    return {i: stats[i] for i in sorted(wanted)}


def _outs(model: LanguageModel) -> tuple[str, str]:
    structure = model.family.structure
    return structure.attn_out, structure.mlp_out


def standardise(scores: np.ndarray) -> np.ndarray:
    """``(s − mean) / std`` (``std`` with one degree of freedom removed); zeros if constant."""
    scores = np.asarray(scores, np.float64)
    std = scores.std(ddof=1) if scores.size > 1 else 0.0
    return (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)


def block_scores(
    block_params: Params,
    stats: tuple[Fluctuation, Fluctuation],
    out_paths: tuple[str, str],
    head_dim: int,
    kv_heads: int,
    unit: str,
) -> tuple[np.ndarray, np.ndarray]:
    """FLAP's standardised unit scores of one block.

    Returns:
      ``(attention, mlp)``: per query head (``unit="query"``) or per key/value group (the mean of
      its heads' channels), and per MLP channel.
    """
    metrics = []
    for stat, path in zip(stats, out_paths, strict=True):
        kernel = np.asarray(get_leaf(block_params, path)["kernel"], np.float64)
        metrics.append(np.asarray(stat.variance, np.float64) * np.sum(kernel**2, axis=1))
    attention = standardise(metrics[0] ** 2)
    per_unit = head_dim if unit == "query" else attention.size // kv_heads
    return attention.reshape(-1, per_unit).mean(axis=1), standardise(metrics[1])


def compensation(
    block_params: Params,
    stats: tuple[Fluctuation, Fluctuation],
    out_paths: tuple[str, str],
    keep: BlockKeep,
    head_dim: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The biases that replace the removed channels by their mean input (attention, MLP)."""
    kept = (channels_of(keep.heads, head_dim), np.asarray(keep.mlp, np.int64))
    biases = []
    for stat, path, keep_idx in zip(stats, out_paths, kept, strict=True):
        kernel = np.asarray(get_leaf(block_params, path)["kernel"], np.float64)
        mean = np.asarray(stat.mean, np.float64)
        mean[keep_idx] = 0.0
        biases.append(mean @ kernel)
    return biases[0], biases[1]
