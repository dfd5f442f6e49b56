"""Mixtral (transformers' ``MixtralForCausalLM``): a Mistral decoder with sparse MoE MLPs.

Every block's MLP is ``num_local_experts`` SwiGLU experts of width ``intermediate_size``, the
top ``num_experts_per_tok`` of a softmax router running on each token with their probabilities
renormalised (see :mod:`jaxprune.models.moe`). Checkpoints store one tensor per expert
(``block_sparse_moe.experts.{e}.w1/w3/w2``: gate, up, down) and the router as
``block_sparse_moe.gate``; here each block's experts are stacked, and the router is
``mlp/gate``, never pruned by default. ``router_jitter_noise`` acts only in training.
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

NAMES = ExpertNames(
    "model.layers.{i}.block_sparse_moe.gate.weight",
    "model.layers.{i}.block_sparse_moe.experts.{e}.{proj}.weight",
    {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"},
)


@dataclasses.dataclass(frozen=True)
class MixtralConfig(MoeConfig):
    """A Mixtral config: :class:`~jaxprune.models.moe.MoeConfig` (top-k weights renormalised)."""

    rms_norm_eps: float = 1e-5
    rope_theta: float = 1e6

    family = "mixtral"


def config_from_hf(hf_config: dict[str, Any]) -> MixtralConfig:
    """A :class:`MixtralConfig` from a ``mixtral`` ``config.json`` dict.

    Raises:
      ValueError: a feature the model does not implement, or more experts per token than experts.
    """
    return llama_config_from_hf({**hf_config, "norm_topk_prob": True}, MixtralConfig)


def params_from_hf(tensors, config: MixtralConfig, dtype: Any = jnp.float32) -> Params:
    """Mixtral tensors to params, each block's experts stacked.

    Raises:
      ValueError: naming missing, unexpected or misshapen tensors.
    """
    return moe_params_from_hf(tensors, config, NAMES, dtype)


def params_to_hf(params: Params, config: MixtralConfig) -> dict[str, Any]:
    """Hugging Face Mixtral names → arrays (one tensor per expert)."""
    return moe_params_to_hf(params, config, NAMES)


def config_to_hf(config: MixtralConfig) -> dict[str, Any]:
    """The ``mixtral`` ``config.json`` of ``config``.

    Raises:
      ValueError: biases or blocks of different widths (transformers' Mixtral holds neither).
    """
    moe_config_to_hf(config)
    if config.qk_norm or not config.norm_topk_prob:
        raise ValueError("a Mixtral config.json cannot hold qk_norm or unnormalised top-k weights")
    return {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "num_local_experts": config.num_local_experts,
        "num_experts_per_tok": config.num_experts_per_tok,
        "sliding_window": None,
        **hf_config_common(config),
    }


FAMILY = register_family(
    Family(
        "mixtral",
        MixtralConfig,
        MoeForCausalLM,
        MOE_SEQUENTIAL_GROUPS,
        MOE_DEFAULT_TARGETS,
        partition_rules=MOE_PARTITION_RULES,
        hf=HfSpec(
            ("mixtral",),
            config_from_hf,
            params_from_hf,
            config_to_hf,
            params_to_hf,
            stacked=functools.partial(stacked_sources, names=NAMES),
        ),
    )
)
