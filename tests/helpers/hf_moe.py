"""Tiny random transformers mixture-of-experts models (Mixtral, Qwen3-MoE), saved with
``save_pretrained``: two blocks, four experts, two per token, O(1) logits (weights ~ N(0, 1/fan_in),
norms perturbed), so a wrong routing, renormalisation or expert order shows in the logits."""

from __future__ import annotations

import torch
import transformers
from hf_families import COMMON

MOE = dict(COMMON, intermediate_size=24, head_dim=8, num_experts_per_tok=2)
CONFIGS = {
    "mixtral": lambda: transformers.MixtralConfig(**MOE, num_local_experts=4, sliding_window=None),
    "qwen3_moe": lambda: transformers.Qwen3MoeConfig(
        **{**MOE, "intermediate_size": 40},
        moe_intermediate_size=24,
        num_experts=4,
        norm_topk_prob=False,
        decoder_sparse_step=1,
        mlp_only_layers=[],
    ),
}
MOE_FAMILIES = tuple(CONFIGS)


def hf_moe_model(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny random MoE ``AutoModelForCausalLM`` of family ``name`` (eval mode, float32)."""
    torch.manual_seed(seed)
    config = CONFIGS[name]()
    for key, value in overrides.items():
        setattr(config, key, value)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                param.normal_(0.0, param.shape[-1] ** -0.5)
            else:
                param.add_(0.1 * torch.randn_like(param))
    return model.float().eval()
