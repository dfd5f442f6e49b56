"""Qwen3-MoE (transformers' ``Qwen3MoeForCausalLM``): a Qwen3 decoder with sparse MoE MLPs.

A Qwen3 block (per-head q/k RMSNorm) whose MLP is ``num_experts`` SwiGLU experts of width
``moe_intermediate_size``, the top ``num_experts_per_tok`` of a softmax router running on each
token, renormalised when ``norm_topk_prob`` (see :mod:`jaxprune.models.moe`). Checkpoints store
one tensor per expert (``mlp.experts.{e}.gate_proj/up_proj/down_proj``) and the router as
``mlp.gate``; here each block's experts are stacked, and the router is never pruned by default.
Dense MLP blocks among the sparse ones (``mlp_only_layers``, ``decoder_sparse_step`` > 1; no
released checkpoint has them) are refused.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax.numpy as jnp

from jaxprune.models.base import Family, HfSpec, Params, register_family
from jaxprune.models.llama import config_from_hf as llama_config_from_hf
from jaxprune.models.llama import hf_config_common
from jaxprune.models.moe import (
    MOE_DEFAULT_TARGETS,
    MOE_PARTITION_RULES,
    MOE_SEQUENTIAL_GROUPS,
    ExpertNames,
    MoeConfig,
    MoeForCausalLM,
    moe_config_to_hf,
    moe_params_from_hf,
    moe_params_to_hf,
    stacked_sources,
)
from jaxprune.models.qwen2 import without_sliding_window

NAMES = ExpertNames(
    "model.layers.{i}.mlp.gate.weight",
    "model.layers.{i}.mlp.experts.{e}.{proj}.weight",
    {"gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"},
)


@dataclasses.dataclass(frozen=True)
class Qwen3MoeConfig(MoeConfig):
    """A Qwen3-MoE config: :class:`~jaxprune.models.moe.MoeConfig` with per-head q/k RMSNorm.

    ``intermediate_size`` is the experts' width (``moe_intermediate_size`` there);
    ``dense_intermediate_size`` keeps the checkpoint's unused dense width for the export.
    """

    qk_norm: bool = True
    norm_topk_prob: bool = False
    dense_intermediate_size: int | None = None

    family = "qwen3_moe"


def config_from_hf(hf_config: dict[str, Any]) -> Qwen3MoeConfig:
    """A :class:`Qwen3MoeConfig` from a ``qwen3_moe`` ``config.json`` dict.

    Raises:
      ValueError: dense MLP blocks, another activation or RoPE scaling type, or more experts per
        token than experts.
    """
    d = without_sliding_window(hf_config)
    if d.get("mlp_only_layers") or d.get("decoder_sparse_step", 1) != 1:
        raise ValueError(
            "Qwen3-MoE blocks with dense MLPs (mlp_only_layers, decoder_sparse_step > 1) are not "
            "supported; every block must be sparse"
        )
    d["dense_intermediate_size"] = d.get("intermediate_size")
    d["intermediate_size"] = d["moe_intermediate_size"]
    d["num_local_experts"] = d.get("num_experts", d.get("num_local_experts"))
    return llama_config_from_hf(d, Qwen3MoeConfig)


def params_from_hf(tensors, config: Qwen3MoeConfig, dtype: Any = jnp.float32) -> Params:
    """Qwen3-MoE tensors to params, each block's experts stacked.

    Raises:
      ValueError: naming missing, unexpected or misshapen tensors.
    """
    return moe_params_from_hf(tensors, config, NAMES, dtype)


def params_to_hf(params: Params, config: Qwen3MoeConfig) -> dict[str, Any]:
    """Hugging Face Qwen3-MoE names → arrays (one tensor per expert)."""
    return moe_params_to_hf(params, config, NAMES)


def config_to_hf(config: Qwen3MoeConfig) -> dict[str, Any]:
    """The ``qwen3_moe`` ``config.json`` of ``config``.

    Raises:
      ValueError: biases or blocks of different widths (transformers' Qwen3-MoE holds neither).
    """
    moe_config_to_hf(config)
    common = hf_config_common(config)
    width = common.pop("intermediate_size")
    return {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "num_experts": config.num_local_experts,
        "num_experts_per_tok": config.num_experts_per_tok,
        "norm_topk_prob": config.norm_topk_prob,
        "moe_intermediate_size": width,
        "intermediate_size": config.dense_intermediate_size or width,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "use_sliding_window": False,
        **common,
    }


FAMILY = register_family(
    Family(
        "qwen3_moe",
        Qwen3MoeConfig,
        MoeForCausalLM,
        MOE_SEQUENTIAL_GROUPS,
        MOE_DEFAULT_TARGETS,
        partition_rules=MOE_PARTITION_RULES,
        hf=HfSpec(
            ("qwen3_moe",),
            config_from_hf,
            params_from_hf,
            config_to_hf,
            params_to_hf,
            stacked=functools.partial(stacked_sources, names=NAMES),
        ),
    )
)
