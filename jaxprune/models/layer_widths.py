"""Per-layer widths of a decoder config, shared by the LLaMA and Gemma 3 configs.

A structurally pruned model has per-layer head counts and MLP widths (``num_heads_per_layer``,
``num_kv_heads_per_layer``, ``intermediate_sizes``; ``None`` = every layer the uniform
``num_attention_heads``, ``num_key_value_heads``, ``intermediate_size``) and, after FLAP's bias
compensation, biases on its linears (``attention_bias``/``mlp_bias``). Both configs name these
fields alike, so one mixin reads and replaces them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

from jaxprune.models.base import LayerWidths, per_layer_widths

PER_LAYER_FIELDS = ("num_heads_per_layer", "num_kv_heads_per_layer", "intermediate_sizes")

_Config = TypeVar("_Config", bound="PerLayerWidths")


class PerLayerWidths:
    """Mixin for a frozen config dataclass with the uniform widths, their per-layer overrides
    (:data:`PER_LAYER_FIELDS`) and ``attention_bias``/``mlp_bias`` fields."""

    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    num_heads_per_layer: tuple[int, ...] | None
    num_kv_heads_per_layer: tuple[int, ...] | None
    intermediate_sizes: tuple[int, ...] | None

    def _check_layer_widths(self) -> None:
        """Stores the per-layer fields as tuples; for ``__post_init__``.

        Raises:
          ValueError: a per-layer field of the wrong length or with a non-positive width, or a
            layer whose query heads are not a multiple of its key/value heads.
        """
        for name in PER_LAYER_FIELDS:
            value = per_layer_widths(getattr(self, name), self.num_hidden_layers, name)
            object.__setattr__(self, name, value)
        for i in range(self.num_hidden_layers):
            heads, kv_heads, _ = self.layer_widths(i)
            if heads % kv_heads:
                where = "" if self.num_heads_per_layer is None else f" in layer {i}"
                raise ValueError(
                    f"num_attention_heads={heads} must be a multiple of "
                    f"num_key_value_heads={kv_heads}{where}"
                )

    def layer_widths(self, index: int) -> LayerWidths:
        """Query heads, key/value heads and MLP width of layer ``index``."""

        def pick(per_layer: tuple[int, ...] | None, uniform: int) -> int:
            return uniform if per_layer is None else per_layer[index]

        return LayerWidths(
            pick(self.num_heads_per_layer, self.num_attention_heads),
            pick(self.num_kv_heads_per_layer, self.num_key_value_heads),
            pick(self.intermediate_sizes, self.intermediate_size),
        )

    def with_layer_widths(self: _Config, widths: Sequence[LayerWidths]) -> _Config:
        """This config with per-layer widths (one :class:`LayerWidths` per layer)."""
        heads, kv_heads, mlp = (tuple(int(w[k]) for w in widths) for k in range(3))
        return dataclasses.replace(
            self, num_heads_per_layer=heads, num_kv_heads_per_layer=kv_heads, intermediate_sizes=mlp
        )

    def with_output_biases(self: _Config) -> _Config:
        """This config with biases on its linears (o_proj's and down_proj's hold FLAP's bias)."""
        return dataclasses.replace(self, attention_bias=True, mlp_bias=True)
