"""The LLaMA-family config: hyper-parameters, optional biases and optional per-layer widths.

Kept apart from ``llama.py`` (the modules and the Hugging Face mapping) so that each file stays
small. A structurally pruned model (:mod:`jaxprune.structured`) has per-layer head counts and MLP
widths (``num_heads_per_layer``, ``num_kv_heads_per_layer``, ``intermediate_sizes``; ``None`` =
every layer the uniform value) and, after FLAP's bias compensation, biases on its linears
(``attention_bias``/``mlp_bias``, Hugging Face's names).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprune.models.layer_widths import PerLayerWidths


@dataclasses.dataclass(frozen=True)
class LlamaConfig(PerLayerWidths):
    """Hyper-parameters of a LLaMA-family decoder (names follow ``transformers.LlamaConfig``).

    ``num_heads_per_layer``, ``num_kv_heads_per_layer`` and ``intermediate_sizes`` override the
    uniform widths layer by layer (see :meth:`layer_widths`); ``head_dim`` stays the same.
    ``qkv_bias`` gives only the query/key/value projections biases (Qwen2) and ``qk_norm`` adds a
    per-head RMSNorm of the queries and keys before the rotary embedding (Qwen3): families built
    on these modules set them.
    """

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # LLaMA-3.1 frequency scaling as a tuple of (key, value) pairs so the config stays hashable.
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 2048
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    attention_bias: bool = False
    mlp_bias: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    num_heads_per_layer: tuple[int, ...] | None = None
    num_kv_heads_per_layer: tuple[int, ...] | None = None
    intermediate_sizes: tuple[int, ...] | None = None

    family = "llama"

    def __post_init__(self):
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if isinstance(self.rope_scaling, dict):
            object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))
        self._check_layer_widths()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.rope_scaling is not None:
            d["rope_scaling"] = dict(self.rope_scaling)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LlamaConfig:
        """A config from a dict such as a Hugging Face ``config.json`` (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        scaling = kwargs.get("rope_scaling")
        if isinstance(scaling, dict):
            rope_type = scaling.get("rope_type", scaling.get("type"))
            if rope_type in (None, "default"):
                kwargs["rope_scaling"] = None
            elif rope_type != "llama3":
                raise ValueError(
                    f"rope_scaling type {rope_type!r} is not supported (supported: default, llama3)"
                )
        for key in ("bos_token_id", "eos_token_id"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = kwargs[key][0]
        for key in ("attention_bias", "mlp_bias", "qkv_bias", "qk_norm"):
            if key in kwargs:
                kwargs[key] = bool(kwargs[key])
        return cls(**kwargs)
