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

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.models import kv_cache
from jaxprune.models.base import (
    Family,
    GgufSpec,
    HfSpec,
    MlpSpec,
    Params,
    check_tensor_names,
    register_family,
)
from jaxprune.models.llama import DEFAULT_TARGETS, PARTITION_RULES, SEQUENTIAL_GROUPS, apply_rope

SLIDING, GLOBAL = "sliding_attention", "full_attention"


@dataclasses.dataclass(frozen=True)
class Gemma3Config:
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
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layer_types"] = list(self.layer_types)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Gemma3Config:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


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


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs, dtype) -> nnx.Linear:
    init = nnx.initializers.normal(0.02)
    return nnx.Linear(
        d_in, d_out, use_bias=False, dtype=dtype, param_dtype=dtype, kernel_init=init, rngs=rngs
    )


class Attention(nnx.Module):
    def __init__(self, config: Gemma3Config, rngs: nnx.Rngs, dtype):
        c = config
        self.config = c
        q_out, kv_out = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        self.q_proj = _linear(c.hidden_size, q_out, rngs, dtype)
        self.k_proj = _linear(c.hidden_size, kv_out, rngs, dtype)
        self.v_proj = _linear(c.hidden_size, kv_out, rngs, dtype)
        self.o_proj = _linear(q_out, c.hidden_size, rngs, dtype)
        self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps, dtype=dtype)
        self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps, dtype=dtype)

    def __call__(self, x: jax.Array, positions: jax.Array, sliding, taps: dict | None):
        c = self.config
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).reshape(b, t, c.num_attention_heads, c.head_dim))
        k = self.k_norm(self.k_proj(x).reshape(b, t, c.num_key_value_heads, c.head_dim))
        v = self.v_proj(x).reshape(b, t, c.num_key_value_heads, c.head_dim)
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
        groups = c.num_attention_heads // c.num_key_value_heads
        q = q.reshape(b, t, c.num_key_value_heads, groups, c.head_dim)
        scores = jnp.einsum("bqhgd,bkhd->bhgqk", q, k).astype(jnp.float32)
        scores = scores * c.query_pre_attn_scalar**-0.5
        # Causal, and within the window on sliding layers: key j is seen from query i if
        # i - window < j <= i.
        distance = positions[:, None] - key_positions[None, :]
        visible = (distance >= 0) & (~sliding | (distance < c.sliding_window))
        scores = jnp.where(visible, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhgqk,bkhd->bqhgd", probs, v).reshape(b, t, -1)
        if taps is not None:
            taps["o_in"] = out
        return self.o_proj(out)


class MLP(nnx.Module):
    def __init__(self, config: Gemma3Config, rngs: nnx.Rngs, dtype):
        c = config
        self.gate_proj = _linear(c.hidden_size, c.intermediate_size, rngs, dtype)
        self.up_proj = _linear(c.hidden_size, c.intermediate_size, rngs, dtype)
        self.down_proj = _linear(c.intermediate_size, c.hidden_size, rngs, dtype)

    def __call__(self, x: jax.Array, taps: dict | None) -> jax.Array:
        hidden = jax.nn.gelu(self.gate_proj(x), approximate=True) * self.up_proj(x)
        if taps is not None:
            taps["down_in"] = hidden
        return self.down_proj(hidden)


class DecoderBlock(nnx.Module):
    def __init__(self, config: Gemma3Config, rngs: nnx.Rngs, dtype=jnp.float32):
        c = config
        self.config = c
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype=dtype)
        self.self_attn = Attention(c, rngs, dtype)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype=dtype)
        self.pre_feedforward_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype=dtype)
        self.mlp = MLP(c, rngs, dtype)
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
        self.layers = nnx.List([DecoderBlock(c, rngs, dtype) for _ in range(c.num_hidden_layers)])
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

    def __call__(self, tokens: jax.Array) -> jax.Array:
        positions = jnp.arange(tokens.shape[-1])
        x = self.embed(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, positions, layer=i)
        return self.head(x)


# --- Hugging Face checkpoints -------------------------------------------------------------------


def config_from_hf(hf_config: dict[str, Any]) -> Gemma3Config:
    """A :class:`Gemma3Config` from a ``gemma3_text`` ``config.json`` dict (transformers 4 or 5).

    Raises:
      ValueError: the config uses a feature this model does not implement.
    """
    d = dict(hf_config)
    act = d.get("hidden_activation", d.get("hidden_act", "gelu_pytorch_tanh"))
    if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise ValueError(f"hidden_activation {act!r} is not supported (only 'gelu_pytorch_tanh')")
    for flag in ("attention_bias", "use_bidirectional_attention"):
        if d.get(flag):
            raise ValueError(f"{flag}=true is not supported by the Gemma 3 model")
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
    return Gemma3Config.from_dict(d)


def _hf_name(keys: tuple[Any, ...]) -> str:
    """``("layers", 0, "mlp", "up_proj", "kernel")`` -> ``"model.layers.0.mlp.up_proj.weight"``."""
    *module, _ = (str(k) for k in keys)
    name = ".".join([*module, "weight"])
    return name if module == ["lm_head"] else f"model.{name}"


def params_from_hf(
    tensors: Mapping[str, np.ndarray], config: Gemma3Config, dtype: Any = jnp.float32
) -> Params:
    """Converts Hugging Face Gemma 3 tensors (``model.layers.0.mlp.up_proj.weight`` ...) to params.

    Args:
      tensors: name -> array in Hugging Face layout (linear weights ``(out, in)``).
      config: the model config, used to check every shape.
      dtype: dtype of the returned arrays.

    Raises:
      ValueError: naming missing, unexpected or misshapen tensors.
    """
    abstract = nnx.eval_shape(lambda: Gemma3ForCausalLM(config, rngs=nnx.Rngs(0)))
    shapes = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
    leaves = jax.tree_util.tree_flatten_with_path(shapes)[0]
    plan = {_hf_name(tuple(k.key for k in path)): (path, spec.shape) for path, spec in leaves}
    tied = config.tie_word_embeddings
    check_tensor_names(
        tensors,
        plan,
        # A tied checkpoint may still carry the embedding again as lm_head.
        lambda n: tied and n == "lm_head.weight",
        f"a {config.num_hidden_layers}-layer Gemma 3 model (tie_word_embeddings={tied})",
    )

    def convert(path, spec):
        name = _hf_name(tuple(k.key for k in path))
        value = np.asarray(tensors[name])
        value = value.T if path[-1].key == "kernel" else value  # torch (out, in) -> Flax (in, out)
        if value.shape != spec.shape:
            raise ValueError(
                f"tensor {name} has shape {tuple(np.shape(tensors[name]))}, which does not fit "
                f"the config (Flax shape {spec.shape})"
            )
        return jnp.asarray(value, dtype=dtype)

    return jax.tree_util.tree_map_with_path(convert, shapes)


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
        hf=HfSpec(("gemma3_text",), config_from_hf, params_from_hf),
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
        bos=True,
    )
)
