"""Static token-count schedules and the FLOPs they cost.

A :class:`TokenSchedule` fixes how many tokens enter every block, so a pruned forward pass has
static shapes throughout and compiles to one program. Pruning happens *between* blocks: the tokens
entering block ``l`` are chosen from block ``l - 1``'s output with block ``l - 1``'s attention
probabilities and keys. Prefix tokens (CLS, DeiT's distillation token) are always kept and are
counted in ``counts``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from jaxprune.models.vit import ViTConfig


@dataclasses.dataclass(frozen=True)
class TokenSchedule:
    """Tokens entering each block.

    Attributes:
      counts: ``counts[l]`` tokens (prefix tokens included) enter block ``l``; non-increasing,
        ``counts[0]`` is the model's full token count.
      prefix: prefix tokens, never pruned.
    """

    counts: tuple[int, ...]
    prefix: int = 1

    def __post_init__(self):
        counts = tuple(int(c) for c in self.counts)
        object.__setattr__(self, "counts", counts)
        if not counts:
            raise ValueError("a schedule needs one token count per block, got none")
        if any(b > a for a, b in zip(counts, counts[1:], strict=False)):
            raise ValueError(f"token counts must not grow from block to block: {counts}")
        if counts[-1] <= self.prefix:
            raise ValueError(
                f"every block needs at least one patch token besides the {self.prefix} prefix "
                f"token(s); the schedule ends with {counts[-1]}"
            )

    @classmethod
    def dense(cls, config: ViTConfig) -> TokenSchedule:
        """No pruning: every block sees all tokens."""
        return cls((config.num_tokens,) * config.num_hidden_layers, config.num_prefix_tokens)

    @classmethod
    def from_keep_ratios(
        cls, config: ViTConfig, ratios: Mapping[int, float] | Sequence[float]
    ) -> TokenSchedule:
        """A schedule from keep ratios by layer.

        Args:
          config: the model's config.
          ratios: ``{layer: ratio}`` or one ratio per block. Before block ``layer`` (``1 <= layer
            < num blocks``) ``round(ratio * patch tokens)`` of the patch tokens coming out of
            block ``layer - 1`` are kept. A ratio of 1 prunes nothing.

        Raises:
          ValueError: a layer out of range, a ratio outside ``(0, 1]``, or a ratio at block 0
            (nothing has computed attention yet).
        """
        n_layers = config.num_hidden_layers
        if not isinstance(ratios, Mapping):
            if len(ratios) != n_layers:
                raise ValueError(f"give one keep ratio per block ({n_layers}), got {len(ratios)}")
            ratios = {i: r for i, r in enumerate(ratios) if r != 1}
        patches, counts = config.grid**2, []
        for layer in range(n_layers):
            ratio = ratios.get(layer, 1.0)
            if not 0 < ratio <= 1:
                raise ValueError(f"keep ratio at layer {layer} must be in (0, 1], got {ratio}")
            if layer == 0 and ratio != 1:
                raise ValueError("tokens can be pruned before blocks 1.., not before block 0")
            patches = max(1, int(round(ratio * patches)))
            counts.append(config.num_prefix_tokens + patches)
        unknown = sorted(k for k in ratios if not 0 <= k < n_layers)
        if unknown:
            raise ValueError(f"layers {unknown} are out of range 0..{n_layers - 1}")
        return cls(tuple(counts), config.num_prefix_tokens)

    def check(self, config: ViTConfig) -> TokenSchedule:
        """The schedule itself, after checking it fits ``config``; raises ``ValueError``."""
        if len(self.counts) != config.num_hidden_layers:
            raise ValueError(
                f"the schedule has {len(self.counts)} counts for {config.num_hidden_layers} blocks"
            )
        if self.counts[0] != config.num_tokens or self.prefix != config.num_prefix_tokens:
            raise ValueError(
                f"the schedule starts with {self.counts[0]} tokens ({self.prefix} prefix); the "
                f"model has {config.num_tokens} ({config.num_prefix_tokens} prefix)"
            )
        return self

    def steps(self) -> list[tuple[int, int, int]]:
        """``(block, tokens in, tokens out)`` for every block after which tokens are removed."""
        nxt = [*self.counts[1:], self.counts[-1]]
        return [(i, a, b) for i, (a, b) in enumerate(zip(self.counts, nxt, strict=True)) if b < a]

    def flops(self, config: ViTConfig) -> float:
        """FLOPs (2 per multiply-add) of one image's forward: patch embedding and all blocks."""
        c = config
        embed = 2.0 * c.grid**2 * c.num_channels * c.patch_size**2 * c.hidden_size
        return embed + sum(block_flops(c, n) for n in self.counts)

    def flop_reduction(self, config: ViTConfig) -> float:
        """``1 - flops / dense flops``."""
        return 1.0 - self.flops(config) / TokenSchedule.dense(config).flops(config)


def block_flops(config: ViTConfig, tokens: int) -> float:
    """FLOPs of one block on ``tokens`` tokens: q, k, v, o and the MLP, plus the two attention
    products (``QKᵀ`` and ``PV``); norms, softmax and GELU are left out."""
    d, m = config.hidden_size, config.intermediate_size
    return 2.0 * (tokens * (4 * d * d + 2 * d * m) + 2 * tokens * tokens * d)


def schedule_for_flop_reduction(
    config: ViTConfig, target: float, layers: Sequence[int] = (3, 6, 9)
) -> TokenSchedule:
    """The schedule with one keep ratio at ``layers`` whose FLOPs reduction is nearest ``target``.

    Args:
      config: the model's config.
      target: wanted ``1 - flops / dense flops``, e.g. 0.35.
      layers: the blocks before which tokens are pruned (all with the same ratio).
    """
    if not 0 <= target < 1:
        raise ValueError(f"target FLOPs reduction must be in [0, 1), got {target}")
    best, best_err = TokenSchedule.dense(config), float("inf")
    for ratio in np.linspace(1.0, 0.05, 951):
        schedule = TokenSchedule.from_keep_ratios(config, dict.fromkeys(layers, float(ratio)))
        err = abs(schedule.flop_reduction(config) - target)
        if err < best_err:
            best, best_err = schedule, err
    return best


__all__ = ["TokenSchedule", "block_flops", "schedule_for_flop_reduction"]
