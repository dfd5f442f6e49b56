"""The Gemma 3 config and its ``config.json`` mapping, both ways.

Kept apart from ``gemma3.py`` (the modules and the tensors' mapping) so that each file stays
small. A structurally pruned model has per-layer head counts and MLP widths
(``num_heads_per_layer``, ``num_kv_heads_per_layer``, ``intermediate_sizes``; ``None`` = every
layer the uniform value) and, after FLAP's bias compensation, biases (``attention_bias``: all four
attention projections, as transformers' flag; ``mlp_bias``: the MLP's, which transformers' Gemma 3
cannot hold).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprune.models.hf_tensors import uniform_widths
from jaxprune.models.layer_widths import PerLayerWidths

SLIDING, GLOBAL = "sliding_attention", "full_attention"
_HF_WIDTHS = ("num_attention_heads", "num_key_value_heads", "intermediate_size")


@dataclasses.dataclass(frozen=True)
class Gemma3Config(PerLayerWidths):
    """Hyper-parameters of a Gemma 3 text decoder (names follow ``Gemma3TextConfig``).

    Defaults are Gemma-3-270M's. ``layer_types`` (``"sliding_attention"`` / ``"full_attention"``
    per block) defaults to Gemma 3's pattern: every sixth block global. ``rope_scaling_factor``
    divides the global layers' rotary frequencies (linear scaling; 8 in Gemma 3 4B and larger).
    ``query_pre_attn_scalar`` defaults to ``head_dim`` (what llama.cpp assumes for GGUF files,
    which do not store it; right for every Gemma 3 but the 27B, whose config.json gives 168).
    """

    vocab_size: int = 262144
    hidden_size: int = 640
    intermediate_size: int = 2048
    num_hidden_layers: int = 18
    num_attention_heads: int = 4
    num_key_value_heads: int = 1
    head_dim: int = 256
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_local_base_freq: float = 10_000.0
    rope_scaling_factor: float = 1.0
    sliding_window: int = 512
    layer_types: tuple[str, ...] | None = None
    query_pre_attn_scalar: float | None = None
    final_logit_softcapping: float | None = None
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 32768
    bos_token_id: int | None = 2
    eos_token_id: int | None = 1
    attention_bias: bool = False
    mlp_bias: bool = False
    num_heads_per_layer: tuple[int, ...] | None = None
    num_kv_heads_per_layer: tuple[int, ...] | None = None
    intermediate_sizes: tuple[int, ...] | None = None

    family = "gemma3"

    def __post_init__(self):
        if self.query_pre_attn_scalar is None:
            object.__setattr__(self, "query_pre_attn_scalar", float(self.head_dim))
        kinds = self.layer_types
        if kinds is None:
            kinds = [GLOBAL if (i + 1) % 6 == 0 else SLIDING for i in range(self.num_hidden_layers)]
        object.__setattr__(self, "layer_types", tuple(kinds))
        if len(kinds) != self.num_hidden_layers or not set(kinds) <= {SLIDING, GLOBAL}:
            raise ValueError(
                f"layer_types must give {SLIDING!r} or {GLOBAL!r} for each of the "
                f"{self.num_hidden_layers} blocks, got {self.layer_types}"
            )
        self._check_layer_widths()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layer_types"] = list(self.layer_types)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Gemma3Config:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def config_from_hf(hf_config: dict[str, Any]) -> Gemma3Config:
    """A :class:`Gemma3Config` from a ``gemma3_text`` ``config.json`` dict (transformers 4 or 5).

    Raises:
      ValueError: the config uses a feature this model does not implement.
    """
    d = dict(hf_config)
    act = d.get("hidden_activation", d.get("hidden_act", "gelu_pytorch_tanh"))
    if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise ValueError(f"hidden_activation {act!r} is not supported (only 'gelu_pytorch_tanh')")
    if d.get("use_bidirectional_attention"):
        raise ValueError("use_bidirectional_attention=true is not supported by the Gemma 3 model")
    if d.get("attn_logit_softcapping") is not None:
        # Gemma 2 capped attention scores; Gemma 3 checkpoints set null (and transformers' Gemma 3
        # ignores the value), so a set value means a checkpoint this model would misread.
        raise ValueError("attn_logit_softcapping is not supported by the Gemma 3 model")
    # transformers >= 5 keeps both RoPE bases (and the global layers' scaling) in rope_parameters.
    rope = d.get("rope_parameters") or {}
    local, full = rope.get(SLIDING, {}), rope.get(GLOBAL, {})
    d.setdefault("rope_local_base_freq", local.get("rope_theta", 10_000.0))
    d.setdefault("rope_theta", full.get("rope_theta", 1_000_000.0))
    scaling = d.get("rope_scaling") or (
        full if full.get("rope_type", "default") != "default" else {}
    )
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ("default", "linear") or local.get("rope_type", "default") != "default":
        raise ValueError(f"RoPE type {kind!r} is not supported (supported: default, linear)")
    d["rope_scaling_factor"] = float(scaling.get("factor", 1.0)) if kind == "linear" else 1.0
    pattern = d.get("sliding_window_pattern")
    if d.get("layer_types") is None and pattern is not None:
        # An int: every pattern-th block is global; a list (llama.cpp): True marks sliding blocks.
        n = d["num_hidden_layers"]
        if isinstance(pattern, int):
            pattern = [(i + 1) % pattern != 0 for i in range(n)]
        d["layer_types"] = [SLIDING if sliding else GLOBAL for sliding in pattern]
    for key in ("bos_token_id", "eos_token_id"):
        if isinstance(d.get(key), list):
            d[key] = d[key][0]
    d["attention_bias"] = bool(d.get("attention_bias") or False)
    d.pop("mlp_bias", None)  # not a Gemma 3 key; only jaxprune's shrunk configs set it
    return Gemma3Config.from_dict(d)


def config_to_hf(config: Gemma3Config) -> dict[str, Any]:
    """The ``gemma3_text`` ``config.json`` of ``config`` (transformers 5 ``rope_parameters``).

    Raises:
      ValueError: blocks of different widths, or MLP biases (FLAP's compensation), which
        transformers' Gemma 3 MLP cannot hold.
    """
    if config.mlp_bias:
        raise ValueError(
            "cannot export to Hugging Face: transformers' Gemma 3 MLP has no biases, and this "
            "model's down_proj carries FLAP's compensation bias; prune with "
            "bias_compensation=False (jaxprune prune --no-bias-compensation) to export it"
        )
    c = config.to_dict()
    global_rope = {"rope_type": "default", "rope_theta": c["rope_theta"]}
    if c["rope_scaling_factor"] != 1.0:
        global_rope = {**global_rope, "rope_type": "linear", "factor": c["rope_scaling_factor"]}
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "head_dim", "rms_norm_eps")
    keys += ("sliding_window", "layer_types", "query_pre_attn_scalar", "final_logit_softcapping")
    keys += ("tie_word_embeddings", "max_position_embeddings", "bos_token_id", "eos_token_id")
    scalar = c["query_pre_attn_scalar"]  # transformers' config field is an int
    c["query_pre_attn_scalar"] = int(scalar) if float(scalar).is_integer() else scalar
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_activation": "gelu_pytorch_tanh",
        "attention_bias": config.attention_bias,
        **{k: c[k] for k in keys},
        **uniform_widths(config, _HF_WIDTHS),
        "rope_parameters": {
            SLIDING: {"rope_type": "default", "rope_theta": c["rope_local_base_freq"]},
            GLOBAL: global_rope,
        },
    }
