"""Gemma 3 text decoder (transformers' ``Gemma3ForCausalLM``) in Flax NNX.

Where it departs from LLaMA, and where a pruning library can go wrong:

- grouped-query attention with a head size independent of the width (Gemma-3-270M: 4 query heads
  and 1 key/value head of 256 on a width of 640), scores scaled by ``query_pre_attn_scalar^-1/2``;
- RMSNorm of the queries and keys per head (``q_norm``, ``k_norm``) before the rotary embedding;
- every RMSNorm scales by ``1 + w`` (the weights are stored as offsets from 1), and each block
  normalises the outputs of its attention and MLP too (``post_attention_layernorm``,
  ``post_feedforward_layernorm``) before adding them to the residual stream;
- a gated MLP with the tanh approximation of GELU: ``down(gelu_tanh(gate(x)) * up(x))``;
- sliding-window ("local") and global attention interleaved (by default every sixth block is
  global), each kind with its own RoPE base (10k local, 1M global, optionally linearly scaled);
- embeddings multiplied by ``sqrt(hidden_size)`` (in the params' dtype), tied to the LM head.

A block's kind depends on its position, so blocks take their ``layer`` index, possibly traced: the
mask and the rotary frequencies are selected with ``jnp.where``, and one compiled step serves every
block. Parameter names mirror Hugging Face's; kernels are Flax ``(in, out)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxprune.models.kv_cache as kv_cache
from jaxprune.models.base import (
    Family,
    GgufSpec,
    HfSpec,
    LayerWidths,
    MlpSpec,
    Params,
    register_family,
)
from jaxprune.models.gemma3_config import (
    SLIDING,
    Gemma3Config,
    config_from_hf,
    config_to_hf,
)
from jaxprune.models.hf_tensors import params_from_hf_names, params_to_hf
from jaxprune.models.llama import (
    DEFAULT_TARGETS,
    PARTITION_RULES,
    SEQUENTIAL_GROUPS,
    STRUCTURE,
    apply_rope,
)


def _inverse_frequencies(config: Gemma3Config, base: float, factor: float) -> jax.Array:
    dim = config.head_dim
    return 1.0 / (base ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)) / factor


class RMSNorm(nnx.Module):
    """RMSNorm scaling by ``1 + w``, computed in float32 (``Gemma3RMSNorm``)."""

    def __init__(self, dim: int, eps: float, *, dtype=jnp.float32):
        self.scale = nnx.Param(jnp.zeros((dim,), dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (normed * (1.0 + self.scale[...].astype(jnp.float32))).astype(x.dtype)


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs, dtype, bias: bool = False) -> nnx.Linear:
    init = nnx.initializers.normal(0.02)
    return nnx.Linear(
        d_in, d_out, use_bias=bias, dtype=dtype, param_dtype=dtype, kernel_init=init, rngs=rngs
    )


class Attention(nnx.Module):
    def __init__(self, config: Gemma3Config, widths: LayerWidths, rngs: nnx.Rngs, dtype):
        c, bias = config, config.attention_bias
        self.config = c
        q_out, kv_out = widths.heads * c.head_dim, widths.kv_heads * c.head_dim
        self.q_proj = _linear(c.hidden_size, q_out, rngs, dtype, bias)
        self.k_proj = _linear(c.hidden_size, kv_out, rngs, dtype, bias)
        self.v_proj = _linear(c.hidden_size, kv_out, rngs, dtype, bias)
        self.o_proj = _linear(q_out, c.hidden_size, rngs, dtype, bias)
        self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps, dtype=dtype)
        self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps, dtype=dtype)

    def __call__(self, x: jax.Array, positions: jax.Array, sliding, taps: dict | None):
        c = self.config
        b, t, _ = x.shape
        # Head counts come from the projections' shapes (a shrunk block has fewer).
        q = self.q_norm(self.q_proj(x).reshape(b, t, -1, c.head_dim))
        k = self.k_norm(self.k_proj(x).reshape(b, t, -1, c.head_dim))
        v = self.v_proj(x).reshape(b, t, -1, c.head_dim)
        heads, kv_heads = q.shape[2], k.shape[2]
        inv_freq = jnp.where(
            sliding,
            _inverse_frequencies(c, c.rope_local_base_freq, 1.0),
            _inverse_frequencies(c, c.rope_theta, c.rope_scaling_factor),
        )
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        key_positions = positions
        cache = kv_cache.active()
        if cache is not None:  # decoding: attend over the cached keys and values too
            k, v, key_positions = cache.extend(k, v)
        q = q.reshape(b, t, kv_heads, heads // kv_heads, c.head_dim)
        scores = jnp.einsum("bqhgd,bkhd->bhgqk", q, k).astype(jnp.float32)
        scores = scores * c.query_pre_attn_scalar**-0.5
        # Causal, and within the window on sliding layers: key j is seen from query i if
        # i - window < j <= i.
        # Positions are (t,) or, scoring continuations of several contexts, (b, t) per row.
        distance = positions[..., :, None] - key_positions[None, :]
        visible = (distance >= 0) & (~sliding | (distance < c.sliding_window))
        if visible.ndim == 3:
            visible = visible[:, None, None]
        scores = jnp.where(visible, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhgqk,bkhd->bqhgd", probs, v).reshape(b, t, -1)
        if taps is not None:
            taps["o_in"] = out
        return self.o_proj(out)


class MLP(nnx.Module):
    def __init__(self, config: Gemma3Config, width: int, rngs: nnx.Rngs, dtype):
        d, bias = config.hidden_size, config.mlp_bias
        self.gate_proj = _linear(d, width, rngs, dtype, bias)
        self.up_proj = _linear(d, width, rngs, dtype, bias)
        self.down_proj = _linear(width, d, rngs, dtype, bias)

    def __call__(self, x: jax.Array, taps: dict | None) -> jax.Array:
        hidden = jax.nn.gelu(self.gate_proj(x), approximate=True) * self.up_proj(x)
        if taps is not None:
            taps["down_in"] = hidden
        return self.down_proj(hidden)


class DecoderBlock(nnx.Module):
    def __init__(self, config: Gemma3Config, index: int, rngs: nnx.Rngs, dtype=jnp.float32):
        c, widths = config, config.layer_widths(index)
        self.config = c
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype=dtype)
        self.self_attn = Attention(c, widths, rngs, dtype)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype=dtype)
        self.pre_feedforward_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype=dtype)
        self.mlp = MLP(c, widths.mlp, rngs, dtype)
        self.post_feedforward_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype=dtype)

    def __call__(self, x: jax.Array, positions: jax.Array, capture: bool = False, layer=None):
        """The block output, and with ``capture`` the inputs of its linears by tap.

        Raises:
          ValueError: ``layer`` (this block's index, an int or a traced scalar) is missing.
        """
        if layer is None:
            raise ValueError(
                "Gemma 3 blocks differ by position (sliding-window or global attention): pass the "
                "block's index (LanguageModel.block(..., index=i))"
            )
        sliding = jnp.asarray([kind == SLIDING for kind in self.config.layer_types])[layer]
        taps: dict | None = {} if capture else None
        h = self.input_layernorm(x)
        if capture:
            taps["attn_in"] = h
        x = x + self.post_attention_layernorm(self.self_attn(h, positions, sliding, taps))
        h = self.pre_feedforward_layernorm(x)
        if capture:
            taps["mlp_in"] = h
        x = x + self.post_feedforward_layernorm(self.mlp(h, taps))
        return (x, taps) if capture else x


class Gemma3ForCausalLM(nnx.Module):
    """A Gemma 3 causal LM; ``model(tokens)`` returns logits (batch, seq, vocab)."""

    def __init__(self, config: Gemma3Config, *, rngs: nnx.Rngs, dtype=jnp.float32):
        c = config
        self.config = c
        self.embed_tokens = nnx.Embed(
            c.vocab_size,
            c.hidden_size,
            dtype=dtype,
            param_dtype=dtype,
            embedding_init=nnx.initializers.normal(0.02),
            rngs=rngs,
        )
        self.layers = nnx.List(
            [DecoderBlock(c, i, rngs, dtype) for i in range(c.num_hidden_layers)]
        )
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype=dtype)
        if not c.tie_word_embeddings:
            self.lm_head = _linear(c.hidden_size, c.vocab_size, rngs, dtype)

    def embed(self, tokens: jax.Array) -> jax.Array:
        hidden = self.embed_tokens(tokens)
        # transformers rounds the scale to the embedding's dtype before multiplying.
        return hidden * jnp.asarray(math.sqrt(self.config.hidden_size), hidden.dtype)

    def head(self, hidden: jax.Array) -> jax.Array:
        hidden = self.norm(hidden)
        if self.config.tie_word_embeddings:
            logits = self.embed_tokens.attend(hidden)
        else:
            logits = self.lm_head(hidden)
        cap = self.config.final_logit_softcapping
        return logits if cap is None else cap * jnp.tanh(logits / cap)

    def hidden_states(self, tokens: jax.Array) -> jax.Array:
        """The last block's output (before the final norm and the head)."""
        positions = jnp.arange(tokens.shape[-1])
        x = self.embed(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, positions, layer=i)
        return x

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return self.head(self.hidden_states(tokens))


# --- Hugging Face checkpoints -------------------------------------------------------------------


def params_from_hf(
    tensors: Mapping[str, np.ndarray], config: Gemma3Config, dtype: Any = jnp.float32
) -> Params:
    """Converts Hugging Face Gemma 3 tensors (``model.layers.0.mlp.up_proj.weight`` ...) to params.

    A tied checkpoint may still carry the embedding again as ``lm_head``.

    Raises:
      ValueError: naming missing, unexpected or misshapen tensors.
    """
    tied = config.tie_word_embeddings
    return params_from_hf_names(
        tensors,
        lambda: Gemma3ForCausalLM(config, rngs=nnx.Rngs(0)),
        dtype,
        model=f"a {config.num_hidden_layers}-layer Gemma 3 model (tie_word_embeddings={tied})",
        ignore=lambda n: tied and n == "lm_head.weight",
    )


FAMILY = register_family(
    Family(
        "gemma3",
        Gemma3Config,
        Gemma3ForCausalLM,
        SEQUENTIAL_GROUPS,
        DEFAULT_TARGETS,
        partition_rules=PARTITION_RULES,
        mlp=MlpSpec(
            "gated",
            (("gate", "mlp/gate_proj"), ("up", "mlp/up_proj"), ("down", "mlp/down_proj")),
            "gelu_tanh",
        ),
        hf=HfSpec(("gemma3_text",), config_from_hf, params_from_hf, config_to_hf, params_to_hf),
        # llama.cpp's Gemma converter keeps Hugging Face's row order and stores norms as 1 + w.
        gguf=GgufSpec(
            "gemma3",
            block_names=(
                ("attn_q_norm", "self_attn.q_norm"),
                ("attn_k_norm", "self_attn.k_norm"),
                ("post_attention_norm", "post_attention_layernorm"),
                ("ffn_norm", "pre_feedforward_layernorm"),
                ("post_ffw_norm", "post_feedforward_layernorm"),
            ),
            config_keys=(
                ("attention.sliding_window", "sliding_window"),
                ("attention.sliding_window_pattern", "sliding_window_pattern"),
                ("rope.freq_base_swa", "rope_local_base_freq"),
                ("final_logit_softcapping", "final_logit_softcapping"),
            ),
            norm_offset=1.0,
        ),
        # q_norm/k_norm are one head_dim vector shared by every head: nothing of theirs to slice.
        structure=STRUCTURE,
        bos=True,
    )
)

# The family's API; the NNX building blocks (Attention, MLP, ...) are its implementation.
__all__ = ["FAMILY", "Gemma3Config", "Gemma3ForCausalLM", "config_from_hf", "params_from_hf"]
