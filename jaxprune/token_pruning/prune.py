"""``prune_tokens``: a ViT whose forward pass drops (or merges) tokens by a static schedule.

The pruned forward is one ``jax.jit`` program per input shape: the schedule fixes every block's
token count, the methods select with ``lax.top_k`` and gathers, and the blocks that prune nothing
run exactly the dense computation (no taps, no gathers). With a schedule that keeps every token,
the output is bit-identical to the dense model's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import jaxprune.token_pruning.baselines as baselines
import jaxprune.token_pruning.zero_tprune as zero_tprune
from jaxprune.models.vit import ViTModel
from jaxprune.token_pruning.schedule import TokenSchedule


@dataclasses.dataclass(frozen=True)
class TokenMethod:
    """A token-reduction method.

    Attributes:
      name: registry name.
      reduce: ``reduce(x, taps, keep, *, prefix, layer, num_layers, sizes, rng, **options) ->
        (x, sizes)``; keeps ``keep`` patch tokens.
      options: option names and defaults.
      max_drop: the most patch tokens one step may remove, given the patch tokens entering it.
    """

    name: str
    reduce: Callable[..., tuple[jax.Array, jax.Array | None]]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_drop: Callable[[int], int] = lambda m: m - 1


TOKEN_METHODS: dict[str, TokenMethod] = {
    method.name: method
    for method in (
        TokenMethod(
            "zero-tprune",
            zero_tprune.reduce,
            {
                "iterations": None,
                "similarity_share": 0.5,
                "uniform_init": False,
                "variance_range": zero_tprune.VARIANCE_RANGE,
            },
        ),
        TokenMethod("random", baselines.random_reduce),
        TokenMethod("evit", baselines.evit_reduce),
        # Bipartite matching merges at most every token of A (the even positions) away.
        TokenMethod("tome", baselines.tome_reduce, max_drop=lambda m: (m + 1) // 2),
    )
}


class TokenPrunedViT:
    """A ViT whose forward pass follows a token schedule; built by :func:`prune_tokens`.

    ``tokens(params, images)`` returns the final-normed surviving tokens ``(batch, k, hidden)``
    (CLS first), ``features`` the CLS token, ``logits`` the classifier's output. Each is compiled
    once per input shape; ``compilations`` counts the traces.
    """

    def __init__(self, model: ViTModel, schedule: TokenSchedule, method: TokenMethod, **kw):
        self.model, self.schedule, self.method = model, schedule, method
        self.seed = kw.pop("seed")
        self.options = kw
        self.compilations = 0
        self._tokens = jax.jit(self._forward)
        self._features = jax.jit(lambda p, x: self._forward(p, x)[:, 0])
        self._logits = jax.jit(lambda p, x: self.model.module(p).classify(self._forward(p, x)))

    def _forward(self, params, images: jax.Array) -> jax.Array:
        self.compilations += 1  # runs only while tracing
        module = self.model.module(params)
        counts = self.schedule.counts
        prefix, n_layers = self.schedule.prefix, len(counts)
        x = module.embeddings(images)
        sizes = None
        for i, layer in enumerate(module.layers):
            out_tokens = counts[i + 1] if i + 1 < n_layers else counts[-1]
            prune = out_tokens < x.shape[1]
            bias = None if sizes is None else jnp.log(sizes)
            x, taps = layer(x, key_bias=bias, capture=prune)
            if prune:
                x, sizes = self.method.reduce(
                    x,
                    taps,
                    out_tokens - prefix,
                    prefix=prefix,
                    layer=i,
                    num_layers=n_layers,
                    sizes=sizes,
                    rng=jax.random.fold_in(jax.random.key(self.seed), i),
                    **self.options,
                )
        return module.layernorm(x)

    def tokens(self, params, images: jax.Array) -> jax.Array:
        return self._tokens(params, images)

    def features(self, params, images: jax.Array) -> jax.Array:
        return self._features(params, images)

    def logits(self, params, images: jax.Array) -> jax.Array:
        return self._logits(params, images)

    def flop_reduction(self) -> float:
        """``1 - flops / dense flops`` of the blocks and patch embedding (selection not counted)."""
        return self.schedule.flop_reduction(self.model.config)


def prune_tokens(
    model: ViTModel,
    schedule: TokenSchedule | dict[int, float],
    method: str = "zero-tprune",
    *,
    seed: int = 0,
    **options: Any,
) -> TokenPrunedViT:
    """A ViT whose forward pass keeps only the tokens ``schedule`` allows, chosen by ``method``.

    Args:
      model: the ViT (:class:`jaxprune.models.vit.ViTModel`); params are passed at call time.
      schedule: a :class:`TokenSchedule`, or keep ratios by layer ``{layer: ratio}`` (see
        :meth:`TokenSchedule.from_keep_ratios`).
      method: ``"zero-tprune"``, ``"random"``, ``"evit"`` or ``"tome"``.
      seed: the random baseline's seed.
      **options: the method's options (Zero-TPrune: ``iterations``, ``similarity_share``,
        ``uniform_init``, ``variance_range``).

    Returns:
      A :class:`TokenPrunedViT`: ``.tokens/.features/.logits(params, images)``.

    Raises:
      ValueError: unknown method or option, a schedule that does not fit the model, or a step
        that removes more tokens than the method can (ToMe: half of the patch tokens).
    """
    if method not in TOKEN_METHODS:
        raise ValueError(f"unknown token method {method!r}; known: {', '.join(TOKEN_METHODS)}")
    spec = TOKEN_METHODS[method]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        known = ", ".join(spec.options) or "none"
        raise ValueError(f"{method} has no option(s) {unknown}; its options: {known}")
    if not isinstance(schedule, TokenSchedule):
        schedule = TokenSchedule.from_keep_ratios(model.config, schedule)
    schedule.check(model.config)
    prefix = schedule.prefix
    for block, before, after in schedule.steps():
        m, drop = before - prefix, before - after
        if drop > spec.max_drop(m):
            raise ValueError(
                f"{method} can remove at most {spec.max_drop(m)} of {m} patch tokens in one step; "
                f"the schedule removes {drop} after block {block}: spread it over more layers"
            )
    return TokenPrunedViT(model, schedule, spec, seed=seed, **{**spec.options, **options})


__all__ = ["TOKEN_METHODS", "TokenMethod", "TokenPrunedViT", "prune_tokens"]
