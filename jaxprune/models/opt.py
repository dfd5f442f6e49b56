"""OPT decoder (Meta's OPT-125m … OPT-66b) in Flax NNX.

One readable file: multi-head attention with biases, learned absolute positions (with OPT's offset
of 2), LayerNorm before (most sizes) or after (OPT-350m) each sub-layer, ReLU MLP, an optional
projection between the word-embedding width and the model width (OPT-350m), and an LM head tied to
the token embedding.

Parameter names mirror Hugging Face's (``layers/3/fc1/kernel``, ``layers/3/self_attn/q_proj/bias``)
with the decoder's prefix dropped; kernels use the Flax layout ``(in, out)``. As in ``llama.py``,
every block can hand back the inputs of its linear layers ("taps") for the calibration engine.
"""

from __future__ import annotations

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
    HfSpec,
    MlpSpec,
    Params,
    StructureSpec,
    register_family,
)
from jaxprune.models.hf_tensors import hf_name, params_to_hf_names
from jaxprune.models.opt_config import OPTConfig, config_to_hf

# The linears of one block, grouped by the input they read, in "true sequential" order.
SEQUENTIAL_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attn_in", ("self_attn/q_proj", "self_attn/k_proj", "self_attn/v_proj")),
    ("o_in", ("self_attn/out_proj",)),
    ("mlp_in", ("fc1",)),
    ("down_in", ("fc2",)),
)
DEFAULT_TARGETS = r"layers/\d+/(self_attn/(q|k|v|out)_proj|fc1|fc2)/kernel"

# As for LLaMA: prunable kernels (and their biases) split along their outputs over "model", the
# embedding table by vocabulary (see jaxprune.sharding).
PARTITION_RULES: tuple[tuple[str, PartitionSpec], ...] = (
    (r"layers/\d+/(self_attn/(q|k|v|out)_proj|fc1|fc2)/kernel", PartitionSpec(None, "model")),
    (r"layers/\d+/(self_attn/(q|k|v|out)_proj|fc1|fc2)/bias", PartitionSpec("model")),
    (r"embed_tokens/embedding", PartitionSpec("model", None)),
)

# OPT's position table has two extra leading rows (a fairseq padding convention), so position p
# reads row p + 2.
POSITION_OFFSET = 2
# torch.nn.LayerNorm's default, which every OPT checkpoint was trained with.
LAYER_NORM_EPS = 1e-5


def _linear(d_in: int, d_out: int, use_bias: bool, rngs: nnx.Rngs, dtype) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=dtype,
        kernel_init=nnx.initializers.normal(0.02),
        rngs=rngs,
    )


def _layer_norm(config: OPTConfig, rngs: nnx.Rngs, dtype) -> nnx.LayerNorm:
    affine = config.layer_norm_elementwise_affine
    return nnx.LayerNorm(
        config.hidden_size,
        epsilon=LAYER_NORM_EPS,
        use_bias=affine,
        use_scale=affine,
        # The two-pass variance matches torch; E[x²]-E[x]² loses digits when |mean| >> std.
        use_fast_variance=False,
        dtype=dtype,
        param_dtype=dtype,
        rngs=rngs,
    )


class Attention(nnx.Module):
    """Multi-head attention; the head count is read from the projections' shapes."""

    def __init__(self, config: OPTConfig, heads: int, rngs: nnx.Rngs, dtype):
        d, bias = config.hidden_size, config.enable_bias
        self.head_dim = config.head_dim
        width = heads * self.head_dim
        self.q_proj = _linear(d, width, bias, rngs, dtype)
        self.k_proj = _linear(d, width, bias, rngs, dtype)
        self.v_proj = _linear(d, width, bias, rngs, dtype)
        self.out_proj = _linear(width, d, bias, rngs, dtype)

    def __call__(self, x: jax.Array, taps: dict | None) -> jax.Array:
        b, t, _ = x.shape
        head_dim = self.head_dim
        # OPT scales the queries (bias included) before the dot product, not the scores.
        q = self.q_proj(x).reshape(b, t, -1, head_dim) * head_dim**-0.5
        k = self.k_proj(x).reshape(b, t, -1, head_dim)
        v = self.v_proj(x).reshape(b, t, -1, head_dim)
        out = causal_attention(q, k, v, scale=1.0).reshape(b, t, -1)
        if taps is not None:
            taps["o_in"] = out
        return self.out_proj(out)


class DecoderBlock(nnx.Module):
    def __init__(self, config: OPTConfig, index: int, rngs: nnx.Rngs, dtype=jnp.float32):
        c = config
        widths = c.layer_widths(index)
        self.pre_norm = c.do_layer_norm_before
        self.self_attn = Attention(c, widths.heads, rngs, dtype)
        self.self_attn_layer_norm = _layer_norm(c, rngs, dtype)
        self.fc1 = _linear(c.hidden_size, widths.mlp, c.enable_bias, rngs, dtype)
        self.fc2 = _linear(widths.mlp, c.hidden_size, c.enable_bias, rngs, dtype)
        self.final_layer_norm = _layer_norm(c, rngs, dtype)

    def __call__(self, x: jax.Array, positions: jax.Array, capture: bool = False, layer=None):
        """Returns the block output, and with ``capture`` also the inputs of its linears by tap.

        ``positions`` is unused: OPT adds its learned positions once, in ``embed``; every block is
        alike, so the ``layer`` index is not needed either.
        """
        del positions, layer
        taps: dict | None = {} if capture else None
        h = self.self_attn_layer_norm(x) if self.pre_norm else x
        if capture:
            taps["attn_in"] = h
        x = x + self.self_attn(h, taps)
        if not self.pre_norm:  # OPT-350m normalises after the residual sum instead
            x = self.self_attn_layer_norm(x)
        h = self.final_layer_norm(x) if self.pre_norm else x
        if capture:
            taps["mlp_in"] = h
        hidden = jax.nn.relu(self.fc1(h))
        if capture:
            taps["down_in"] = hidden
        x = x + self.fc2(hidden)
        if not self.pre_norm:
            x = self.final_layer_norm(x)
        return (x, taps) if capture else x


class OPTForCausalLM(nnx.Module):
    """An OPT causal language model. ``model(tokens)`` returns logits (batch, seq, vocab)."""

    def __init__(self, config: OPTConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        c = config
        self.config = c

        def embedding(rows: int, width: int) -> nnx.Embed:
            init = nnx.initializers.normal(0.02)
            return nnx.Embed(
                rows, width, dtype=dtype, param_dtype=dtype, embedding_init=init, rngs=rngs
            )

        self.embed_tokens = embedding(c.vocab_size, c.word_embed_proj_dim)
        self.embed_positions = embedding(c.max_position_embeddings + POSITION_OFFSET, c.hidden_size)
        if c.projects_embeddings:
            self.project_in = _linear(c.word_embed_proj_dim, c.hidden_size, False, rngs, dtype)
            self.project_out = _linear(c.hidden_size, c.word_embed_proj_dim, False, rngs, dtype)
        blocks = [DecoderBlock(c, i, rngs, dtype) for i in range(c.num_hidden_layers)]
        self.layers = nnx.List(blocks)
        if c.has_final_layer_norm:
            self.final_layer_norm = _layer_norm(c, rngs, dtype)
        if not c.tie_word_embeddings:
            self.lm_head = _linear(c.word_embed_proj_dim, c.vocab_size, False, rngs, dtype)

    def embed(self, tokens: jax.Array) -> jax.Array:
        """Token embeddings (projected to ``hidden_size``) plus learned positions 0..seq-1."""
        seq = tokens.shape[-1]
        if seq > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {seq} exceeds max_position_embeddings="
                f"{self.config.max_position_embeddings}; use shorter windows"
            )
        x = self.embed_tokens(tokens)
        if self.config.projects_embeddings:
            x = self.project_in(x)
        return x + self.embed_positions(jnp.arange(seq) + POSITION_OFFSET)

    def head(self, hidden: jax.Array) -> jax.Array:
        if self.config.has_final_layer_norm:
            hidden = self.final_layer_norm(hidden)
        if self.config.projects_embeddings:
            hidden = self.project_out(hidden)
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


def _strip_prefix(name: str) -> str:
    for prefix in ("model.decoder.", "model.", "decoder."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def params_from_hf_tensors(
    tensors: dict[str, np.ndarray], config: OPTConfig, *, dtype: Any = None
) -> dict[str, Any]:
    """Converts a transformers OPT state dict into jaxprune's nested-dict params.

    Args:
      tensors: name -> array, as in a safetensors file or ``model.state_dict()`` (converted to
        NumPy). Names may carry ``model.decoder.``, ``model.`` or ``decoder.`` prefixes; tensors
        the model does not use (e.g. a tied ``lm_head.weight``) are ignored.
      config: the model's configuration.
      dtype: cast every parameter to this dtype; ``None`` keeps each tensor's own.

    Returns:
      Params with the layout of ``LanguageModel(config).init_params()``: Flax ``(in, out)``
      kernels and ``params["layers"]`` keyed by int.

    Raises:
      ValueError: naming every missing tensor, or a tensor whose shape does not fit ``config``.
    """
    by_name = {_strip_prefix(k): v for k, v in tensors.items()}
    abstract = nnx.eval_shape(lambda: OPTForCausalLM(config, rngs=nnx.Rngs(0)))
    expected = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
    missing: list[str] = []

    def convert(path, spec):
        name = hf_name(tuple(k.key for k in path), prefix="")
        if name not in by_name:
            missing.append(name)
            return None
        array = np.asarray(by_name[name])
        # torch.nn.Linear stores (out, in); Flax kernels are (in, out).
        array = array.T if path[-1].key == "kernel" else array
        if array.shape != spec.shape:
            raise ValueError(
                f"tensor {name!r} has shape {array.shape} (after conversion) but the config "
                f"expects {spec.shape}; does the checkpoint match its config.json?"
            )
        return jnp.asarray(array, dtype=dtype)

    params = jax.tree_util.tree_map_with_path(convert, expected)
    if missing:
        raise ValueError(
            f"the checkpoint lacks {len(missing)} tensor(s) an OPT model with this config needs: "
            f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
        )
    return params


def params_from_hf(
    tensors: Mapping[str, np.ndarray], config: OPTConfig, dtype: Any = jnp.float32
) -> Params:
    """:func:`params_from_hf_tensors` for a lazily read checkpoint, cast to ``dtype``."""
    params = params_from_hf_tensors({name: tensors[name] for name in tensors}, config)
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def params_to_hf(params: Params, config: OPTConfig) -> dict[str, Any]:
    """Hugging Face OPT names (``model.decoder.layers.0.fc1.weight`` ...) → arrays."""
    del config  # the names follow the params' tree
    return params_to_hf_names(params, prefix="model.decoder.")


FAMILY = register_family(
    Family(
        "opt",
        OPTConfig,
        OPTForCausalLM,
        SEQUENTIAL_GROUPS,
        DEFAULT_TARGETS,
        partition_rules=PARTITION_RULES,
        mlp=MlpSpec("relu", (("in", "fc1"), ("out", "fc2")), "relu"),
        hf=HfSpec(
            ("opt",),
            OPTConfig.from_dict,
            params_from_hf,
            config_to_hf,
            params_to_hf,
        ),
        structure=StructureSpec(
            "self_attn/q_proj",
            "self_attn/k_proj",
            "self_attn/v_proj",
            "self_attn/out_proj",
            ("fc1",),
            "fc2",
        ),
    )
)

# The family's API; the NNX building blocks (Attention, DecoderBlock) are its implementation.
__all__ = ["FAMILY", "OPTConfig", "OPTForCausalLM", "params_from_hf", "params_from_hf_tensors"]
