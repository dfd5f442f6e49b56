"""LLM-Pruner's importance of coupled groups (Ma et al., NeurIPS 2023), and its baselines.

The first-order Taylor term of removing a weight ``W`` is ``|ΔL| ≈ |W · ∂L/∂W|``; LLM-Pruner's
kinds (its ``--taylor`` names in brackets), per channel of one member linear:

- ``"vector"`` [vectorize]: ``|Σ W·g|`` over the channel's weights — the whole vector removed;
- ``"element1"`` [param_first]: ``Σ |W·g|`` — each weight on its own, first order;
- ``"element2"`` [param_mix]: ``Σ |W·g − ½ W² F|`` with ``F`` the diagonal Fisher
  ``(1/N) Σ_n g_n²`` of the per-window gradients ``g_n`` (first plus second order);
- baselines ``"l1"`` (``Σ |W|``), ``"l2"`` (``Σ W²``) and ``"random"``.

``g`` is the gradient of the mean next-token loss over the calibration windows (the mean of the
per-window gradients), computed by :func:`gradients` with ``jax.grad`` window by window
(``jax.vmap`` over a chunk of windows for the per-window ones), accumulated in float32 and only
for the member linears of the pruned blocks, so a 7B model's pass fits one 80 GB device (see
``benchmarks/structured_importance_7b.py``). Biases count as one more weight of their channel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.core.paths import get_leaf, set_leaves
from jaxprune.models.base import LanguageModel, Params
from jaxprune.structured.groups import Member

KINDS = ("vector", "element1", "element2", "l1", "l2", "random")
GRADIENT_KINDS = ("vector", "element1", "element2")

__all__ = ["GRADIENT_KINDS", "KINDS", "Gradients", "channel_scores", "gradients", "window_loss"]


class Gradients(NamedTuple):
    """Float32 gradients of the listed leaves: the mean ``g`` and, if asked, the Fisher ``F``.

    Both map a leaf path (``"layers/3/mlp/up_proj/kernel"``) to an array of the leaf's shape.
    """

    mean: dict[str, jax.Array]
    fisher: dict[str, jax.Array] | None
    windows: int


def window_loss(
    model: LanguageModel, params: Params, tokens: jax.Array, remat: bool = False
) -> jax.Array:
    """Mean next-token negative log-likelihood of each window (``(n,)``, at least float32).

    With ``remat`` each block's activations are recomputed in the backward pass
    (``jax.checkpoint``) instead of stored: for long windows, memory for time.
    """
    hidden = model.embed(params, tokens[:, :-1])
    block = jax.checkpoint(model.block, static_argnums=(2,)) if remat else model.block
    for i in range(model.num_blocks):
        # The index: blocks may differ by position (Gemma 3's sliding and global attention).
        hidden = block(model.block_params(params, i), hidden, False, i)
    logits = model.head(params, hidden)
    logp = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), -1)
    picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return -picked.mean(axis=1)


@functools.partial(jax.jit, static_argnames=("model", "second_order", "remat"), donate_argnums=0)
def _accumulate(acc, wrt, params, tokens, *, model, second_order: bool, remat: bool):
    """Adds the per-window gradients of ``tokens``' windows (and their squares) to ``acc``."""

    def loss(leaves, window_tokens):
        return window_loss(model, set_leaves(params, leaves), window_tokens, remat).sum()

    if second_order:  # per-window gradients for the Fisher: vmap of grad over the chunk
        per_window = jax.vmap(jax.grad(loss), in_axes=(None, 0))(wrt, tokens[:, None])
        mean, fisher = acc
        f32 = lambda g: g.astype(jnp.float32)  # noqa: E731
        mean = jax.tree.map(lambda a, g: a + f32(g).sum(0), mean, per_window)
        fisher = jax.tree.map(lambda a, g: a + (f32(g) ** 2).sum(0), fisher, per_window)
        return mean, fisher
    grads = jax.grad(loss)(wrt, tokens)
    return jax.tree.map(lambda a, g: a + g.astype(jnp.float32), acc, grads)


def gradients(
    model: LanguageModel,
    params: Params,
    windows: np.ndarray,
    paths: Sequence[str],
    *,
    second_order: bool = False,
    chunk: int = 1,
    remat: bool = False,
    progress: bool = False,
) -> Gradients:
    """Gradients of the mean window loss with respect to the leaves at ``paths``.

    Args:
      model, params: the model and its params (any float dtype; gradients come back float32).
      windows: int tokens ``(n, seqlen)``.
      paths: the leaves to differentiate (member linears' kernels and biases).
      second_order: also the diagonal Fisher ``(1/n) Σ g_n²`` of the per-window gradients.
      chunk: windows per compiled step (a divisor of ``n`` is used); memory grows with it.
      remat: recompute block activations in the backward pass.
      progress: show a progress bar.

    Returns:
      :class:`Gradients` with ``mean = (1/n) Σ g_n``.
    """
    windows = np.asarray(windows, np.int32)
    n = windows.shape[0]
    chunk = max(c for c in range(1, min(chunk, n) + 1) if n % c == 0)
    wrt = {path: get_leaf(params, path) for path in paths}
    zeros = {path: jnp.zeros(leaf.shape, jnp.float32) for path, leaf in wrt.items()}
    acc = (zeros, jax.tree.map(jnp.zeros_like, zeros)) if second_order else zeros
    starts: Iterable[int] = range(0, n, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="llm-pruner gradients", unit="chunk", leave=False)
    for lo in starts:
        tokens = jnp.asarray(windows[lo : lo + chunk])
        acc = _accumulate(
            acc, wrt, params, tokens, model=model, second_order=second_order, remat=remat
        )
    mean, fisher = acc if second_order else (acc, None)
    scale = lambda tree: {p: a / n for p, a in tree.items()}  # noqa: E731
    return Gradients(scale(mean), None if fisher is None else scale(fisher), n)


def _salience(kind: str, w: jax.Array, g: jax.Array | None, f: jax.Array | None) -> jax.Array:
    w = w.astype(jnp.float32)
    if kind == "l1":
        return jnp.abs(w)
    if kind == "l2":
        return w * w
    if kind == "element2":
        return jnp.abs(w * g - 0.5 * w * w * f)
    return w * g if kind == "vector" else jnp.abs(w * g)


def channel_scores(
    kind: str,
    block: Params,
    member: Member,
    grads: Callable[[str], tuple[Any, Any]] | None = None,
) -> np.ndarray:
    """Per-channel scores of one member linear (see the module docstring for the kinds).

    Args:
      kind: one of :data:`KINDS` except ``"random"`` (drawn per unit by the caller).
      block: the block's params.
      member: the linear and the axis its channels lie on.
      grads: ``leaf name ("kernel"/"bias") -> (g, F)`` of this linear (gradient kinds only).

    Returns:
      ``(channels,)`` float64 scores.
    """
    linear = get_leaf(block, member.path)
    reduce_axis = 0 if member.axis == "out" else 1
    total = None
    for leaf in ("kernel", "bias"):
        if leaf not in linear or (leaf == "bias" and member.axis == "in"):
            continue
        g, f = grads(leaf) if grads is not None else (None, None)
        s = _salience(kind, linear[leaf], g, f)
        s = s.sum(axis=reduce_axis) if s.ndim == 2 else s
        total = s if total is None else total + s
    total = jnp.abs(total) if kind == "vector" else total
    return np.asarray(total, np.float64)
