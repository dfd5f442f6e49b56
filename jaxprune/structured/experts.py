"""Expert pruning of mixture-of-experts models: whole experts removed, the model made smaller.

Every block keeps the same number of experts, ``E - floor(sparsity · E)``, chosen by a score per
expert; the removed experts' stacked kernels and router columns go, and the config's
``num_local_experts`` shrinks (the top-k routing then chooses among the kept experts: the softmax
renormalises over them). Scores:

- ``reap`` (Lasby et al. 2025, "REAP the Experts", Eq. 9): the router-weighted expert activation
  norm ``S_j = (1/|X_j|) Σ_{x ∈ X_j} g_j(x) · ‖f_j(x)‖₂`` over the calibration tokens ``X_j``
  routed to expert ``j`` (it is among the token's top-k), with ``g_j(x)`` the router's softmax
  probability of ``j`` and ``f_j(x)`` the expert's output; an expert no token reached scores 0.
  As in the reference code (``CerebrasResearch/reap``, ``observer.py``), the softmax is not
  renormalised over the top-k, and every score comes from one pass of the dense model.
- ``expert-frequency``: how many calibration tokens were routed to the expert.
- ``expert-random``: seeded uniform scores (no calibration).

The lowest scores go; among equal scores the lower index is kept (a stable order).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.models.base import LanguageModel, Params
from jaxprune.models.moe import EXPERT_PROJECTIONS, MoeConfig

EXPERT_METHODS = ("reap", "expert-frequency", "expert-random")


def removed_per_block(model: LanguageModel, sparsity: float) -> int:
    """How many experts every block loses at ``sparsity`` (checked before any work).

    Raises:
      ValueError: the model has no experts, the sparsity removes none, or too few remain for the
        top-k routing.
    """
    config = model.config
    if not isinstance(config, MoeConfig):
        raise ValueError(
            f"expert pruning needs a mixture-of-experts model (mixtral, qwen3_moe); this one is "
            f"{config.family}: use llm-pruner or flap to remove heads and channels"
        )
    experts, top_k = config.num_local_experts, config.num_experts_per_tok
    removed = int(np.floor(sparsity * experts + 1e-9))
    if removed < 1:
        raise ValueError(
            f"sparsity {sparsity} removes no expert of {experts}; use at least {1 / experts:.4g}"
        )
    if experts - removed < top_k:
        raise ValueError(
            f"sparsity {sparsity} keeps {experts - removed} of {experts} experts, fewer than the "
            f"{top_k} every token is routed to (num_experts_per_tok); use a sparsity of at most "
            f"{(experts - top_k) / experts:.4g}"
        )
    return removed


@functools.partial(jax.jit, static_argnames=("model",))
def _block_scores(model: LanguageModel, block_params: Params, hidden: jax.Array, index):
    """The block's outputs, and per expert: routed tokens and ``Σ_routed g_j(x)·‖f_j(x)‖₂``."""
    out, taps = model.block(block_params, hidden, capture=True, index=index)
    routed = taps["experts_down_in"]
    down = block_params["mlp"]["experts"]["down_proj"]["kernel"].astype(jnp.float32)
    outputs = jnp.einsum("etf,efd->etd", routed.x.astype(jnp.float32), down)
    weighted = taps["routing"] * jnp.linalg.norm(outputs, axis=-1)
    return out, jnp.sum(routed.mask, axis=1), jnp.sum(jnp.where(routed.mask, weighted, 0.0), 1)


def routed_statistics(
    model: LanguageModel, params: Params, calibration: np.ndarray, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, reap)``, both ``(blocks, experts)``: per block and expert the calibration
    tokens routed to it and its REAP score (0 where no token was routed), from one pass of the
    model over ``calibration`` (int tokens ``(n, seqlen)``)."""
    tokens = jnp.asarray(calibration, jnp.int32)
    size = max(d for d in range(1, min(batch_size, len(tokens)) + 1) if len(tokens) % d == 0)
    hidden = [model.embed(params, tokens[i : i + size]) for i in range(0, len(tokens), size)]
    counts, sums = [], []
    for i in range(model.num_blocks):
        block = model.block_params(params, i)
        count, total, outputs = 0, 0.0, []
        for batch in hidden:
            out, n, s = _block_scores(model, block, batch, jnp.int32(i))
            outputs.append(out)
            count, total = count + n, total + s
        hidden = outputs
        counts.append(np.asarray(count))
        sums.append(np.asarray(total, np.float64))
    counts_all = np.stack(counts)
    return counts_all, np.stack(sums) / np.maximum(counts_all, 1)


def shrink_experts(
    model: LanguageModel, params: Params, keeps: dict[int, np.ndarray]
) -> tuple[LanguageModel, Params]:
    """The model keeping experts ``keeps[i]`` (sorted indices, the same count in every block)."""
    kept = {len(k) for k in keeps.values()}
    if len(kept) != 1 or set(keeps) != set(range(model.num_blocks)):
        raise ValueError("every block must keep the same number of experts")
    layers = dict(params[model.BLOCKS])
    for i, keep in keeps.items():
        index = jnp.asarray(keep)
        mlp = layers[i]["mlp"]
        experts = {p: {"kernel": mlp["experts"][p]["kernel"][index]} for p in EXPERT_PROJECTIONS}
        router = {**mlp["gate"], "kernel": mlp["gate"]["kernel"][:, index]}
        layers[i] = {**layers[i], "mlp": {**mlp, "gate": router, "experts": experts}}
    config = dataclasses.replace(model.config, num_local_experts=kept.pop())
    return dataclasses.replace(model, config=config), {**params, model.BLOCKS: layers}


def _non_embedding(model: LanguageModel, params: Params) -> int:
    blocks = [model.block_params(params, i) for i in range(model.num_blocks)]
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(blocks)))


def prune_experts(
    model: LanguageModel, params: Params, calibration: np.ndarray | None, recipe: Any
) -> tuple[LanguageModel, Params, dict[int, np.ndarray], dict[str, Any]]:
    """Removes the lowest-scoring experts of every block (see the module docstring).

    Args:
      model, params: a mixture-of-experts model.
      calibration: int tokens ``(n, seqlen)``; ``None`` only for ``expert-random``.
      recipe: a :class:`~jaxprune.structured.StructuredRecipe` with an expert method.

    Returns:
      ``(model, params, keeps, report)``: the smaller model, its params, the kept expert indices
      per block and the report (per-block scores and routed tokens, kept experts, counts).

    Raises:
      ValueError: before any work (see :func:`removed_per_block`), or no calibration windows.
    """
    start = time.perf_counter()
    removed = removed_per_block(model, recipe.sparsity)
    experts = model.config.num_local_experts
    report: dict[str, Any] = {}
    if recipe.method == "expert-random":
        rng = np.random.default_rng(recipe.seed)
        scores = rng.random((model.num_blocks, experts))
    else:
        if calibration is None:
            raise ValueError(f"{recipe.method} needs calibration windows")
        tokens, reap = routed_statistics(model, params, calibration, recipe.batch_size)
        scores = reap if recipe.method == "reap" else tokens.astype(np.float64)
        report["expert_tokens"] = tokens.tolist()
    keeps = {
        i: np.sort(np.argsort(-scores[i], kind="stable")[: experts - removed])
        for i in range(model.num_blocks)
    }
    smaller, new_params = shrink_experts(model, params, keeps)
    before, after = _non_embedding(model, params), _non_embedding(smaller, new_params)
    report.update(
        {
            "expert_scores": scores.tolist(),
            "kept_experts": [k.tolist() for k in keeps.values()],
            "experts_before": experts,
            "experts_after": experts - removed,
            "params_before": before,
            "params_after": after,
            "removed_fraction": 1.0 - after / before,
            "seconds": time.perf_counter() - start,
        }
    )
    return smaller, new_params, keeps, report


__all__ = [
    "EXPERT_METHODS",
    "prune_experts",
    "removed_per_block",
    "routed_statistics",
    "shrink_experts",
]
