"""LLaMA-family decoder (LLaMA 1/2/3, Mistral-style, SmolLM) in Flax NNX.

One readable file: grouped-query attention, rotary embeddings (optionally with LLaMA-3 frequency
scaling), RMSNorm, SwiGLU MLP, tied or untied embeddings, causal mask; the config is in
``llama_config.py``. Blocks may differ in width (a structurally pruned model): attention reads its
head counts from the shapes of its projections, so one block program serves every width.

Parameter names mirror Hugging Face's so that a path such as ``layers/3/mlp/down_proj/kernel`` means
the same thing in both worlds. Kernels use the Flax layout ``(in, out)``.

Every block can hand back the inputs of its linear layers ("taps") so that the calibration engine
can collect statistics without knowing anything else about the architecture.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

from jaxprune.models.attention import causal_attention
from jaxprune.models.base import (
    Family,
    GgufSpec,
    HfSpec,
    LayerWidths,
    MlpSpec,
    Params,
    StructureSpec,
    register_family,
)
from jaxprune.models.hf_tensors import params_from_hf_names, params_to_hf, uniform_widths
from jaxprune.models.llama_config import LlamaConfig

# The linears of one block, grouped by the input they read. The engine computes one set of
# statistics per tap and prunes the groups in this order when running "true sequential".
SEQUENTIAL_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attn_in", ("self_attn/q_proj", "self_attn/k_proj", "self_attn/v_proj")),
    ("o_in", ("self_attn/o_proj",)),
    ("mlp_in", ("mlp/gate_proj", "mlp/up_proj")),
    ("down_in", ("mlp/down_proj",)),
)
DEFAULT_TARGETS = r"layers/\d+/(self_attn|mlp)/\w+_proj/kernel"

# SwiGLU: SparseLLM's roles (shared by the families built on these modules).
GATED_MLP = MlpSpec(
    "gated", (("gate", "mlp/gate_proj"), ("up", "mlp/up_proj"), ("down", "mlp/down_proj")), "silu"
)

# A head is its q/k/v columns and o_proj rows; an MLP channel its gate/up columns and down row.
STRUCTURE = StructureSpec(
    "self_attn/q_proj",
    "self_attn/k_proj",
    "self_attn/v_proj",
    "self_attn/o_proj",
    ("mlp/gate_proj", "mlp/up_proj"),
    "mlp/down_proj",
)

# Prunable kernels split along their outputs over the "model" mesh axis (a layout for pruning, see
# jaxprune.sharding); the embedding table and LM head by vocabulary, as tensor-parallel decoders do;
# norms replicated (no rule).
PARTITION_RULES: tuple[tuple[str, PartitionSpec], ...] = (
    (
        r"layers/\d+/(self_attn/(q|k|v|o)_proj|mlp/(gate|up|down)_proj)/kernel",
        PartitionSpec(None, "model"),
    ),
    (r"embed_tokens/embedding", PartitionSpec("model", None)),
    (r"lm_head/kernel", PartitionSpec(None, "model")),
)


def _wide(dtype) -> Any:
    """The dtype norms, rotations and softmax compute in: float32, or float64 for float64."""
    return jnp.promote_types(dtype, jnp.float32)


def rope_inverse_frequencies(config: LlamaConfig) -> jax.Array:
    """Inverse frequencies of the rotary embedding, with LLaMA-3 scaling when configured."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    if config.rope_scaling is None:
        return inv_freq
    s = dict(config.rope_scaling)
    factor = s["factor"]
    low, high = s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
    old_len = s.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / inv_freq
    low_wavelen, high_wavelen = old_len / low, old_len / high
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = jnp.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return jnp.where(is_medium, smoothed, scaled)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotates ``x`` (batch, seq, heads, head_dim) by position (HF "rotate half" layout)."""
    angles = positions[..., :, None].astype(jnp.float32) * inv_freq  # (..., seq, dim/2)
    angles = jnp.concatenate([angles, angles], axis=-1)[..., :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x32 = x.astype(_wide(x.dtype))
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, *, dtype=jnp.float32):
        self.scale = nnx.Param(jnp.ones((dim,), dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(_wide(x.dtype))
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (normed * self.scale[...].astype(x32.dtype)).astype(x.dtype)


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs, dtype, bias: bool = False) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        use_bias=bias,
        dtype=dtype,
        param_dtype=dtype,
        kernel_init=nnx.initializers.normal(0.02),
        rngs=rngs,
    )


class Attention(nnx.Module):
    def __init__(self, config: LlamaConfig, widths: LayerWidths, rngs: nnx.Rngs, dtype):
        c, bias = config, config.attention_bias
        self.config = c
        q_width, kv_width = widths.heads * c.head_dim, widths.kv_heads * c.head_dim
        qkv_bias = bias or c.qkv_bias
        self.q_proj = _linear(c.hidden_size, q_width, rngs, dtype, qkv_bias)
        self.k_proj = _linear(c.hidden_size, kv_width, rngs, dtype, qkv_bias)
        self.v_proj = _linear(c.hidden_size, kv_width, rngs, dtype, qkv_bias)
        self.o_proj = _linear(q_width, c.hidden_size, rngs, dtype, bias)
        if c.qk_norm:
            # One RMSNorm over head_dim shared by every head (so removing a head slices nothing).
            self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps, dtype=dtype)
            self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps, dtype=dtype)

    def __call__(self, x: jax.Array, positions: jax.Array, taps: dict | None) -> jax.Array:
        c = self.config
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, -1, c.head_dim)
        k = self.k_proj(x).reshape(b, t, -1, c.head_dim)
        v = self.v_proj(x).reshape(b, t, -1, c.head_dim)
        if c.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        inv_freq = rope_inverse_frequencies(c)
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        # Grouped-query attention: each key/value head serves a group of consecutive query heads.
        out = causal_attention(q, k, v).reshape(b, t, -1)
        if taps is not None:
            taps["o_in"] = out
        return self.o_proj(out)


class MLP(nnx.Module):
    def __init__(self, config: LlamaConfig, width: int, rngs: nnx.Rngs, dtype):
        d, bias = config.hidden_size, config.mlp_bias
        self.gate_proj = _linear(d, width, rngs, dtype, bias)
        self.up_proj = _linear(d, width, rngs, dtype, bias)
        self.down_proj = _linear(width, d, rngs, dtype, bias)

    def __call__(self, x: jax.Array, taps: dict | None) -> jax.Array:
        hidden = jax.nn.silu(self.gate_proj(x)) * self.up_proj(x)
        if taps is not None:
            taps["down_in"] = hidden
        return self.down_proj(hidden)


class DecoderBlock(nnx.Module):
    def __init__(self, config: LlamaConfig, index: int, rngs: nnx.Rngs, dtype=jnp.float32):
        widths = config.layer_widths(index)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype)
        self.self_attn = Attention(config, widths, rngs, dtype)
        self.post_attention_layernorm = RMSNorm(
            config.hidden_size, config.rms_norm_eps, dtype=dtype
        )
        self.mlp = MLP(config, widths.mlp, rngs, dtype)

    def __call__(self, x: jax.Array, positions: jax.Array, capture: bool = False, layer=None):
        """The block output, and with ``capture`` the inputs of its linears by tap (every block
        is alike, so the ``layer`` index is not needed)."""
        del layer
        taps: dict | None = {} if capture else None
        h = self.input_layernorm(x)
        if capture:
            taps["attn_in"] = h
        x = x + self.self_attn(h, positions, taps)
        h = self.post_attention_layernorm(x)
        if capture:
            taps["mlp_in"] = h
        x = x + self.mlp(h, taps)
        return (x, taps) if capture else x


class LlamaForCausalLM(nnx.Module):
    """A LLaMA-family causal LM; ``model(tokens)`` returns logits (batch, seq, vocab).

    ``block_cls`` builds the decoder blocks (a mixture-of-experts family swaps its MLP).
    """

    block_cls = DecoderBlock

    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.config = config
        self.embed_tokens = nnx.Embed(
            config.vocab_size,
            config.hidden_size,
            dtype=dtype,
            param_dtype=dtype,
            embedding_init=nnx.initializers.normal(0.02),
            rngs=rngs,
        )
        self.layers = nnx.List(
            [self.block_cls(config, i, rngs, dtype) for i in range(config.num_hidden_layers)]
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype)
        if not config.tie_word_embeddings:
            self.lm_head = _linear(config.hidden_size, config.vocab_size, rngs, dtype)

    def embed(self, tokens: jax.Array) -> jax.Array:
        return self.embed_tokens(tokens)

    def head(self, hidden: jax.Array) -> jax.Array:
        hidden = self.norm(hidden)
        if self.config.tie_word_embeddings:
            return self.embed_tokens.attend(hidden)
        return self.lm_head(hidden)

    def hidden_states(self, tokens: jax.Array) -> jax.Array:
        """The last block's output (before the final norm and the head)."""
        positions = jnp.arange(tokens.shape[-1])
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, positions)
        return x

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return self.head(self.hidden_states(tokens))


# --- Hugging Face checkpoints -------------------------------------------------------------------


def config_from_hf(hf_config: dict[str, Any], cls: type = LlamaConfig) -> LlamaConfig:
    """A :class:`LlamaConfig` from a LLaMA/Mistral ``config.json`` dict (any transformers version).

    Families built on these modules pass their config class as ``cls``.

    Raises:
      ValueError: the config uses a feature the jaxprune LLaMA model does not implement.
    """
    d = dict(hf_config)
    # transformers >= 5 folds rope_theta and rope_scaling into a single rope_parameters dict.
    rope = d.pop("rope_parameters", None)
    if isinstance(rope, dict):
        rope = dict(rope)
        if "rope_theta" in rope:
            d["rope_theta"] = rope.pop("rope_theta")
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            d["rope_scaling"] = rope
    act = d.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"hidden_act {act!r} is not supported by the LLaMA model (only 'silu')")
    if d.get("sliding_window") is not None:
        warnings.warn(
            f"sliding_window={d['sliding_window']} is ignored: attention is full-causal, which is "
            "exact only for sequences up to the window length",
            stacklevel=3,
        )
    return cls.from_dict(d)


def params_from_hf(
    tensors: Mapping[str, np.ndarray], config: LlamaConfig, dtype: Any = jnp.float32
) -> Params:
    """Converts Hugging Face LLaMA tensors (``model.layers.0.mlp.up_proj.weight`` ...) to params.

    Tied checkpoints may still carry a copy of the embedding as ``lm_head`` (transformers ties it
    back on load), and old ones store the rotary ``inv_freq`` buffer; neither is a parameter.

    Raises:
      ValueError: naming missing, unexpected or misshapen tensors.
    """
    tied = config.tie_word_embeddings
    return params_from_hf_names(
        tensors,
        lambda: LlamaForCausalLM(config, rngs=nnx.Rngs(0)),
        dtype,
        model=f"a {config.num_hidden_layers}-layer {config.family} model "
        f"(tie_word_embeddings={tied})",
        ignore=lambda n: (tied and n == "lm_head.weight") or n.endswith("inv_freq"),
    )


# transformers' names of the three prunable widths (query heads, key/value heads, MLP channels).
HF_WIDTHS = ("num_attention_heads", "num_key_value_heads", "intermediate_size")


def hf_config_common(config: LlamaConfig) -> dict[str, Any]:
    """The ``config.json`` keys every family built on these modules shares (widths uniform).

    Raises:
      ValueError: blocks of different widths (transformers' configs hold one of each).
    """
    c = config.to_dict()
    out = {
        "hidden_act": "silu",
        **{k: c[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "head_dim")},
        **uniform_widths(config, HF_WIDTHS),
        **{k: c[k] for k in ("rms_norm_eps", "rope_theta", "tie_word_embeddings")},
        **{k: c[k] for k in ("max_position_embeddings", "bos_token_id", "eos_token_id")},
    }
    if c.get("rope_scaling"):
        out["rope_scaling"] = {"rope_type": "llama3", **dict(c["rope_scaling"])}
    return out


def config_to_hf(config: LlamaConfig) -> dict[str, Any]:
    """The ``config.json`` of a LLaMA model (a Mistral exports as the LLaMA it computes).

    Raises:
      ValueError: blocks of different widths, or Qwen-style biases/norms LLaMA cannot hold.
    """
    if config.qkv_bias or config.qk_norm:
        raise ValueError("a LLaMA config.json cannot hold qkv_bias or qk_norm (Qwen features)")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        # FLAP's compensation gives LLaMA linears biases (a whole group's, as in transformers).
        "attention_bias": config.attention_bias,
        "mlp_bias": config.mlp_bias,
        **hf_config_common(config),
    }


def llama_like_family(name: str, config: type, hf: HfSpec, gguf: GgufSpec) -> Family:
    """The record of a family that runs on these modules (LLaMA, Qwen2, Qwen3, Phi-3).

    Blocks, taps, default targets, sharding, MLP roles and structured groups are LLaMA's; only
    the config class and the two file mappings are the family's own.
    """
    return Family(
        name,
        config,
        LlamaForCausalLM,
        SEQUENTIAL_GROUPS,
        DEFAULT_TARGETS,
        partition_rules=PARTITION_RULES,
        mlp=GATED_MLP,
        hf=hf,
        gguf=gguf,
        structure=STRUCTURE,
    )


FAMILY = register_family(
    llama_like_family(
        "llama",
        LlamaConfig,
        HfSpec(("llama", "mistral"), config_from_hf, params_from_hf, config_to_hf, params_to_hf),
        GgufSpec("llama", (("ffn_norm", "post_attention_layernorm"),), rotary_rows_permuted=True),
    )
)

# The family's API; the NNX building blocks (Attention, MLP, ...) are its implementation.
__all__ = [
    "DEFAULT_TARGETS",
    "FAMILY",
    "PARTITION_RULES",
    "SEQUENTIAL_GROUPS",
    "LlamaConfig",
    "LlamaForCausalLM",
    "apply_rope",
    "config_from_hf",
    "llama_like_family",
    "params_from_hf",
    "rope_inverse_frequencies",
]
