"""The OPT config and its ``config.json`` mapping, both ways.

Kept apart from ``opt.py`` (the modules and the tensors' mapping) so that each file stays small.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from jaxprune.models.base import LayerWidths, per_layer_widths
from jaxprune.models.hf_tensors import uniform_widths


@dataclasses.dataclass(frozen=True)
class OPTConfig:
    """Hyper-parameters of an OPT decoder (names follow ``transformers.OPTConfig``).

    ``remove_final_layer_norm`` is HF's ``_remove_final_layer_norm`` (old fine-tuned checkpoints).
    ``num_heads_per_layer`` and ``ffn_dims`` override the head count and MLP width layer by layer
    (a structurally pruned model; ``None`` = uniform); the head size stays
    ``hidden_size // num_attention_heads``.
    """

    vocab_size: int = 50272
    hidden_size: int = 768
    ffn_dim: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 2048
    word_embed_proj_dim: int | None = None
    do_layer_norm_before: bool = True
    remove_final_layer_norm: bool = False
    enable_bias: bool = True
    layer_norm_elementwise_affine: bool = True
    activation_function: str = "relu"
    tie_word_embeddings: bool = True
    pad_token_id: int | None = 1
    bos_token_id: int | None = 2
    eos_token_id: int | None = 2
    num_heads_per_layer: tuple[int, ...] | None = None
    ffn_dims: tuple[int, ...] | None = None

    family = "opt"

    def __post_init__(self):
        if self.word_embed_proj_dim is None:
            object.__setattr__(self, "word_embed_proj_dim", self.hidden_size)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be a multiple of "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.activation_function != "relu":
            raise ValueError(
                f"activation_function={self.activation_function!r} is not supported; every OPT "
                "checkpoint uses 'relu'"
            )
        for name in ("num_heads_per_layer", "ffn_dims"):
            value = per_layer_widths(getattr(self, name), self.num_hidden_layers, name)
            object.__setattr__(self, name, value)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def layer_widths(self, index: int) -> LayerWidths:
        """Heads (every head its own key/value head) and MLP width of layer ``index``."""
        heads = self.num_attention_heads
        heads = heads if self.num_heads_per_layer is None else self.num_heads_per_layer[index]
        ffn = self.ffn_dim if self.ffn_dims is None else self.ffn_dims[index]
        return LayerWidths(heads, heads, ffn)

    def with_layer_widths(self, widths: Sequence[LayerWidths]) -> OPTConfig:
        """This config with per-layer widths (OPT has no grouped-query attention)."""
        if any(w.heads != w.kv_heads for w in widths):
            raise ValueError("OPT attention has one key/value head per query head")
        heads = tuple(int(w.heads) for w in widths)
        return dataclasses.replace(
            self, num_heads_per_layer=heads, ffn_dims=tuple(int(w.mlp) for w in widths)
        )

    def with_output_biases(self) -> OPTConfig:
        """This config with biases on every linear (OPT checkpoints already have them)."""
        return dataclasses.replace(self, enable_bias=True)

    @property
    def projects_embeddings(self) -> bool:
        """Whether word embeddings are narrower/wider than the model (``project_in``/``out``)."""
        return self.word_embed_proj_dim != self.hidden_size

    @property
    def has_final_layer_norm(self) -> bool:
        return self.do_layer_norm_before and not self.remove_final_layer_norm

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OPTConfig:
        """Builds a config from a dict such as an HF ``config.json`` (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if "_remove_final_layer_norm" in d:
            kwargs.setdefault("remove_final_layer_norm", d["_remove_final_layer_norm"])
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = kwargs[key][0]
        return cls(**kwargs)


def config_to_hf(config: OPTConfig) -> dict[str, Any]:
    """The ``config.json`` of an OPT model.

    Raises:
      ValueError: blocks of different widths, or removed heads: transformers' OPT derives the head
        size from ``hidden_size / num_attention_heads``, so only MLP channels can go.
    """
    widths = uniform_widths(config, ("num_attention_heads", "num_key_value_heads", "ffn_dim"))
    if widths["num_attention_heads"] != config.num_attention_heads:
        raise ValueError(
            "cannot export to Hugging Face: transformers' OPT derives the head size from "
            "hidden_size / num_attention_heads, so it cannot hold a model whose attention heads "
            f"were removed ({widths['num_attention_heads']} of {config.num_attention_heads} left)"
        )
    c = config.to_dict()
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
    keys += ("max_position_embeddings", "word_embed_proj_dim", "do_layer_norm_before")
    keys += ("enable_bias", "layer_norm_elementwise_affine", "activation_function")
    keys += ("tie_word_embeddings", "pad_token_id", "bos_token_id", "eos_token_id")
    return {
        "architectures": ["OPTForCausalLM"],
        "model_type": "opt",
        **{k: c[k] for k in keys},
        "ffn_dim": widths["ffn_dim"],
        "_remove_final_layer_norm": c["remove_final_layer_norm"],
    }
