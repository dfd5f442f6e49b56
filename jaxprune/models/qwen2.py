"""Qwen2 and Qwen2.5 (transformers' ``Qwen2ForCausalLM``) on the LLaMA modules.

A Qwen2 block is a LLaMA block whose query, key and value projections carry biases (and whose
output projection does not): ``LlamaConfig(qkv_bias=True)``. Embeddings are tied in the small
models (0.5B–3B) and untied in the large ones; both load. Sliding-window attention
(``use_sliding_window``, off in every released checkpoint) is not implemented: full-causal
attention is exact up to the window length, and a config that turns it on gets a warning.

Structured pruning needs nothing new: a head's q/k/v biases are output-axis leaves of its
columns, so they leave with them.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from jaxprune.models.base import GgufSpec, HfSpec, register_family
from jaxprune.models.hf_tensors import params_to_hf
from jaxprune.models.llama import config_from_hf as llama_config_from_hf
from jaxprune.models.llama import hf_config_common, llama_like_family, params_from_hf
from jaxprune.models.llama_config import LlamaConfig


@dataclasses.dataclass(frozen=True)
class Qwen2Config(LlamaConfig):
    """A Qwen2/Qwen2.5 config: :class:`LlamaConfig` with q/k/v biases by default."""

    qkv_bias: bool = True

    family = "qwen2"


def without_sliding_window(hf_config: dict[str, Any]) -> dict[str, Any]:
    """``hf_config`` without its ``sliding_window`` unless ``use_sliding_window`` turns it on
    (Qwen configs always name a window; only the flag says whether it is used)."""
    d = dict(hf_config)
    if d.get("use_sliding_window"):
        warnings.warn(
            f"use_sliding_window=true (window {d.get('sliding_window')}) is ignored: attention "
            "is full-causal, exact only for sequences up to the window length",
            stacklevel=3,
        )
    d.pop("sliding_window", None)
    return d


def config_from_hf(hf_config: dict[str, Any]) -> Qwen2Config:
    """A :class:`Qwen2Config` from a ``qwen2`` ``config.json`` dict.

    Raises:
      ValueError: a feature the model does not implement (activation, RoPE scaling type).
    """
    return llama_config_from_hf(without_sliding_window(hf_config), Qwen2Config)


def config_to_hf(config: Qwen2Config) -> dict[str, Any]:
    """The ``qwen2`` ``config.json`` of ``config``.

    Raises:
      ValueError: blocks of different widths, or biases transformers' Qwen2 cannot hold (on the
        output projection or the MLP: FLAP's compensation).
    """
    if config.attention_bias or config.mlp_bias or not config.qkv_bias or config.qk_norm:
        raise ValueError(
            "cannot export to Hugging Face: transformers' Qwen2 has biases on q/k/v only, and "
            "this model has them elsewhere (FLAP's compensation); prune with "
            "bias_compensation=False (jaxprune prune --no-bias-compensation) to export it"
        )
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "use_sliding_window": False,
        **hf_config_common(config),
    }


FAMILY = register_family(
    llama_like_family(
        "qwen2",
        Qwen2Config,
        HfSpec(("qwen2",), config_from_hf, params_from_hf, config_to_hf, params_to_hf),
        # llama.cpp's Qwen2 converter keeps Hugging Face's q/k row order.
        GgufSpec("qwen2", (("ffn_norm", "post_attention_layernorm"),)),
    )
)
