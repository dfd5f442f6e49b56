"""Qwen3 dense models (transformers' ``Qwen3ForCausalLM``) on the LLaMA modules.

A Qwen3 block is a LLaMA block with an RMSNorm of every query and key head before the rotary
embedding (``q_norm``, ``k_norm``: one ``head_dim`` weight shared by all heads) and an explicit
``head_dim`` (128, independent of the width): ``LlamaConfig(qk_norm=True)``. ``attention_bias``
puts biases on all four projections, as transformers' flag does.

Structured pruning: removing a head removes its q/k/v columns and o_proj rows; the q/k norms act
per head on ``head_dim`` with one shared weight, so they have no per-head slice to remove and
stay whole (the shrunk model computes what the masked one does; tested).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprune.models.base import GgufSpec, HfSpec, register_family
from jaxprune.models.hf_tensors import params_to_hf
from jaxprune.models.llama import config_from_hf as llama_config_from_hf
from jaxprune.models.llama import hf_config_common, llama_like_family, params_from_hf
from jaxprune.models.llama_config import LlamaConfig
from jaxprune.models.qwen2 import without_sliding_window


@dataclasses.dataclass(frozen=True)
class Qwen3Config(LlamaConfig):
    """A Qwen3 config: :class:`LlamaConfig` with per-head q/k RMSNorm."""

    qk_norm: bool = True

    family = "qwen3"


def config_from_hf(hf_config: dict[str, Any]) -> Qwen3Config:
    """A :class:`Qwen3Config` from a ``qwen3`` ``config.json`` dict.

    Raises:
      ValueError: a feature the model does not implement (activation, RoPE scaling type).
    """
    return llama_config_from_hf(without_sliding_window(hf_config), Qwen3Config)


def config_to_hf(config: Qwen3Config) -> dict[str, Any]:
    """The ``qwen3`` ``config.json`` of ``config``.

    Raises:
      ValueError: blocks of different widths, or MLP biases (FLAP's compensation), which
        transformers' Qwen3 cannot hold.
    """
    if config.mlp_bias or (config.qkv_bias and not config.attention_bias) or not config.qk_norm:
        raise ValueError(
            "cannot export to Hugging Face: transformers' Qwen3 MLP has no biases, and this "
            "model's down_proj carries FLAP's compensation bias; prune with "
            "bias_compensation=False (jaxprune prune --no-bias-compensation) to export it"
        )
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": config.attention_bias,
        "use_sliding_window": False,
        **hf_config_common(config),
    }


FAMILY = register_family(
    llama_like_family(
        "qwen3",
        Qwen3Config,
        HfSpec(("qwen3",), config_from_hf, params_from_hf, config_to_hf, params_to_hf),
        GgufSpec(
            "qwen3",
            (
                ("ffn_norm", "post_attention_layernorm"),
                ("attn_q_norm", "self_attn.q_norm"),
                ("attn_k_norm", "self_attn.k_norm"),
            ),
        ),
    )
)
