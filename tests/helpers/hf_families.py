"""Tiny random transformers models of every supported family, and GGUF files written from them.

Each model has O(1) logits (weights ~ N(0, 1/fan_in), norms and biases perturbed), two blocks,
grouped-query attention where the family has it, and a vocabulary of 128, so a wrong rotation,
norm, bias or split shows in the logits.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch
import transformers
from gguf_header import add_hyperparameters

VOCAB = 128
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
_NOT_OPT = ("intermediate_size", "num_key_value_heads")
LLAMA31_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # short, so the tiny model's frequencies fall in all three bands of the scaling
    "original_max_position_embeddings": 16,
}
CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**COMMON, rope_parameters=LLAMA31_ROPE),
    "mistral": lambda: transformers.MistralConfig(**COMMON, sliding_window=None, head_dim=8),
    "qwen2": lambda: transformers.Qwen2Config(**COMMON, tie_word_embeddings=True),
    "qwen3": lambda: transformers.Qwen3Config(**COMMON, head_dim=16, tie_word_embeddings=False),
    "phi3": lambda: transformers.Phi3Config(**COMMON),
    "gemma3_text": lambda: transformers.Gemma3TextConfig(
        **COMMON,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
    ),
    "opt": lambda: transformers.OPTConfig(
        **{k: v for k, v in COMMON.items() if k not in _NOT_OPT},
        ffn_dim=64,
        word_embed_proj_dim=32,
    ),
}
FAMILIES = tuple(CONFIGS)


def hf_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A tiny random ``AutoModelForCausalLM`` of family ``name`` with O(1) logits (eval mode)."""
    torch.manual_seed(seed)
    config = CONFIGS[name]()
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0.0, param.shape[1] ** -0.5)
            else:
                param.add_(0.1 * torch.randn_like(param))
    return model.float().eval()


def torch_logits(model: torch.nn.Module, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.float().numpy()


def tokens(n: int = 2, seqlen: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (n, seqlen)).astype(np.int32)


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    """max |Δ| over max |theirs|."""
    return float(np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max())


# llama.cpp's per-block names (Hugging Face name after "model.layers.{i}." -> GGUF stem).
_GGUF_BLOCK = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.qkv_proj": "attn_qkv",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.gate_up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
_GGUF_TOP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_name(name: str) -> str:
    if name in _GGUF_TOP:
        return _GGUF_TOP[name]
    _, _, layer, *module, leaf = name.split(".")
    return f"blk.{layer}.{_GGUF_BLOCK['.'.join(module)]}.{leaf}"


def write_gguf(path: Path, model: torch.nn.Module, arch: str) -> Path:
    """Writes a qwen2/qwen3/phi3 ``model`` as llama.cpp's converters do (Hugging Face row order,
    Phi-3's fused tensors kept; no tokenizer metadata)."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    w = gguf.GGUFWriter(str(path), arch)
    add_hyperparameters(w, c, c.rope_parameters["rope_theta"], head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_bos_token_id(c.bos_token_id)
    w.add_eos_token_id(c.eos_token_id)
    for name, tensor in model.state_dict().items():
        if c.tie_word_embeddings and name == "lm_head.weight":
            continue
        w.add_tensor(gguf_name(name), np.ascontiguousarray(tensor.float().numpy()))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def assert_head_of_hidden_states_is_the_logits(pretrained) -> None:
    """The zero-shot scorer applies the head to a few positions of ``hidden_states``' output:
    ``head(hidden_states(t))`` must be the logits, bit for bit."""
    import jax.numpy as jnp

    model, params, ids = pretrained.model, pretrained.params, jnp.asarray(tokens())
    split = model.head(params, model.hidden_states(params, ids))
    np.testing.assert_array_equal(np.asarray(split), np.asarray(model.logits(params, ids)))
