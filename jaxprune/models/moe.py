"""Mixture-of-experts decoders (Mixtral, Qwen3-MoE) on the LLaMA modules.

A block is a LLaMA block whose MLP is a sparse mixture of SwiGLU experts: a router (a bias-free
linear ``mlp/gate``, ``(hidden, experts)``) scores every token, the softmax's top
``num_experts_per_tok`` experts run on it, and their outputs are summed weighted by the top-k
probabilities (renormalised to sum to one when ``norm_topk_prob``, Mixtral always). The experts
of one block are stacked: one ``(experts, in, out)`` kernel per projection
(``mlp/experts/{gate,up,down}_proj/kernel``), so every per-expert computation is one batched
program over the expert axis.

The forward pass computes every expert on every token and weights the unrouted ones by exactly
zero (a dense dispatch): exact and one program, at ``experts / top_k`` times the MLP FLOPs of a
sparse dispatch, which is what calibration-scale pruning can afford.

With ``capture=True`` the expert taps are :class:`Routed`: the inputs with a ``(experts, tokens)``
mask of which tokens each expert really received, so the engine's statistics for an expert's
linears see only its routed tokens. The ``routing`` tap holds the router's softmax probabilities
``(experts, tokens)`` (REAP's gate values).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

from jaxprune.models.base import Params
from jaxprune.models.hf_tensors import params_from_hf_names, params_to_hf_names
from jaxprune.models.llama import (
    PARTITION_RULES,
    Attention,
    DecoderBlock,
    LlamaForCausalLM,
    RMSNorm,
    _linear,
)
from jaxprune.models.llama_config import LlamaConfig

# The router is not among the default targets: pruning it changes which experts run.
MOE_DEFAULT_TARGETS = r"layers/\d+/(self_attn/\w+_proj|mlp/experts/\w+_proj)/kernel"
MOE_SEQUENTIAL_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attn_in", ("self_attn/q_proj", "self_attn/k_proj", "self_attn/v_proj")),
    ("o_in", ("self_attn/o_proj",)),
    ("router_in", ("mlp/gate",)),
    ("experts_in", ("mlp/experts/gate_proj", "mlp/experts/up_proj")),
    ("experts_down_in", ("mlp/experts/down_proj",)),
)
EXPERT_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
# Expert parallel: the stacked experts split over the "model" mesh axis (each device holds, runs
# and solves whole experts; the router's weighted sum over experts is the one all-reduce).
MOE_PARTITION_RULES: tuple[tuple[str, PartitionSpec], ...] = (
    (r"layers/\d+/mlp/experts/\w+_proj/kernel", PartitionSpec("model", None, None)),
    *PARTITION_RULES,
)


class Routed(NamedTuple):
    """Inputs of stacked expert linears and which tokens each expert received.

    Attributes:
      x: ``(tokens, in)`` inputs shared by every expert, or ``(experts, tokens, in)`` per expert.
      mask: ``(experts, tokens)`` bool, ``True`` where the token was routed to the expert.
    """

    x: jax.Array
    mask: jax.Array


@dataclasses.dataclass(frozen=True)
class MoeConfig(LlamaConfig):
    """A mixture-of-experts config: :class:`LlamaConfig` with experts.

    ``intermediate_size`` is one expert's width; ``num_local_experts`` the experts per block;
    ``num_experts_per_tok`` how many run on each token; ``norm_topk_prob`` renormalises their
    routing weights to sum to one.
    """

    num_local_experts: int = 8
    num_experts_per_tok: int = 2
    norm_topk_prob: bool = True

    def __post_init__(self):
        super().__post_init__()
        k, n = self.num_experts_per_tok, self.num_local_experts
        if not (isinstance(k, int) and isinstance(n, int) and 0 < k <= n):
            raise ValueError(
                f"num_experts_per_tok={k} must be a positive int at most num_local_experts={n}"
            )


def route(logits: jax.Array, top_k: int, normalize: bool) -> tuple[jax.Array, jax.Array]:
    """``(weights, mask)``, both ``(tokens, experts)``: the top-k softmax probabilities (float32,
    renormalised when ``normalize``, zero elsewhere) and which experts each token runs."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    top, index = jax.lax.top_k(probs, top_k)
    if normalize:
        top = top / jnp.sum(top, axis=-1, keepdims=True)
    chosen = jax.nn.one_hot(index, logits.shape[-1], dtype=jnp.float32)  # (tokens, k, experts)
    return jnp.einsum("tk,tke->te", top, chosen), jnp.sum(chosen, axis=1) > 0


class StackedLinear(nnx.Module):
    """``experts`` bias-free linears stored as one ``(experts, in, out)`` kernel."""

    def __init__(self, experts: int, d_in: int, d_out: int, rngs: nnx.Rngs, dtype):
        init = nnx.initializers.normal(0.02)
        self.kernel = nnx.Param(init(rngs.params(), (experts, d_in, d_out), dtype))


class Experts(nnx.Module):
    """A block's SwiGLU experts, stacked."""

    def __init__(self, config: MoeConfig, rngs: nnx.Rngs, dtype):
        e, d, f = config.num_local_experts, config.hidden_size, config.intermediate_size
        self.gate_proj = StackedLinear(e, d, f, rngs, dtype)
        self.up_proj = StackedLinear(e, d, f, rngs, dtype)
        self.down_proj = StackedLinear(e, f, d, rngs, dtype)


class SparseMoe(nnx.Module):
    """Router plus experts: ``Σ_{e in top-k(x)} w_e(x) · expert_e(x)``."""

    def __init__(self, config: MoeConfig, rngs: nnx.Rngs, dtype):
        self.config = config
        self.gate = _linear(config.hidden_size, config.num_local_experts, rngs, dtype)
        self.experts = Experts(config, rngs, dtype)

    def __call__(self, x: jax.Array, taps: dict | None) -> jax.Array:
        c, shape = self.config, x.shape
        x = x.reshape(-1, shape[-1])
        logits = self.gate(x)
        weights, mask = route(logits, c.num_experts_per_tok, c.norm_topk_prob)
        experts = self.experts
        gate = jnp.einsum("td,edf->etf", x, experts.gate_proj.kernel[...])
        hidden = jax.nn.silu(gate) * jnp.einsum("td,edf->etf", x, experts.up_proj.kernel[...])
        out = jnp.einsum("etf,efd->etd", hidden, experts.down_proj.kernel[...])
        # transformers casts the routing weights to the activations' dtype before weighting.
        y = jnp.einsum("te,etd->td", weights.astype(x.dtype), out)
        if taps is not None:
            taps["router_in"] = x
            taps["experts_in"] = Routed(x, mask.T)
            taps["experts_down_in"] = Routed(hidden, mask.T)
            # REAP's gate values: the softmax over every expert, not renormalised.
            taps["routing"] = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).T
        return y.reshape(shape)


class MoeDecoderBlock(DecoderBlock):
    """A LLaMA decoder block whose MLP is a :class:`SparseMoe`."""

    def __init__(self, config: MoeConfig, index: int, rngs: nnx.Rngs, dtype=jnp.float32):
        widths = config.layer_widths(index)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype)
        self.self_attn = Attention(config, widths, rngs, dtype)
        self.post_attention_layernorm = RMSNorm(
            config.hidden_size, config.rms_norm_eps, dtype=dtype
        )
        self.mlp = SparseMoe(config, rngs, dtype)


class MoeForCausalLM(LlamaForCausalLM):
    """A mixture-of-experts causal LM; ``model(tokens)`` returns logits (batch, seq, vocab)."""

    block_cls = MoeDecoderBlock


# --- Hugging Face checkpoints: one tensor per expert there, one stacked kernel here -------------


@dataclasses.dataclass(frozen=True)
class ExpertNames:
    """A family's Hugging Face names of a block's MoE tensors (``{i}``: block, ``{e}``: expert,
    ``{proj}``: the projection's name there)."""

    router: str
    expert: str
    projections: Mapping[str, str]  # our projection -> theirs


class _StackedTensors(Mapping):
    """A checkpoint's tensors with every block's per-expert weights read as stacked kernels under
    the names :func:`~jaxprune.models.hf_tensors.hf_name` gives our tree."""

    def __init__(self, tensors: Mapping[str, np.ndarray], config: MoeConfig, names: ExpertNames):
        self._tensors, self._names, self._config = tensors, names, config
        self._own: dict[str, tuple[int, str]] = {}
        taken = set()
        for i in range(config.num_hidden_layers):
            for ours, theirs in names.projections.items():
                self._own[f"model.layers.{i}.mlp.experts.{ours}.weight"] = (i, theirs)
                taken |= {
                    names.expert.format(i=i, e=e, proj=theirs)
                    for e in range(config.num_local_experts)
                }
            self._own[f"model.layers.{i}.mlp.gate.weight"] = (i, "")
            taken.add(names.router.format(i=i))
        missing = sorted(n for n in taken if n not in tensors)
        if missing:
            raise ValueError(
                f"checkpoint lacks expert tensors of a {config.num_local_experts}-expert model: "
                f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"
            )
        self._keys = [n for n in tensors if n not in taken] + list(self._own)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._own:
            return self._tensors[name]
        i, proj = self._own[name]
        if not proj:
            return self._tensors[self._names.router.format(i=i)]
        experts = range(self._config.num_local_experts)
        # (experts, out, in) stacked; the converter transposes every axis of a kernel's tensor.
        # jnp, not np: the sliced loader traces this conversion.
        parts = [self._tensors[self._names.expert.format(i=i, e=e, proj=proj)] for e in experts]
        return jnp.stack([jnp.asarray(p) for p in parts]).transpose(1, 2, 0)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def moe_params_from_hf(
    tensors: Mapping[str, np.ndarray], config: MoeConfig, names: ExpertNames, dtype: Any
) -> Params:
    """Params of a MoE checkpoint (per-expert tensors stacked).

    Raises:
      ValueError: naming missing, unexpected or misshapen tensors.
    """
    tied = config.tie_word_embeddings
    return params_from_hf_names(
        _StackedTensors(tensors, config, names),
        lambda: MoeForCausalLM(config, rngs=nnx.Rngs(0)),
        dtype,
        model=f"a {config.num_hidden_layers}-layer {config.num_local_experts}-expert "
        f"{config.family} model (tie_word_embeddings={tied})",
        ignore=lambda n: (tied and n == "lm_head.weight") or n.endswith("inv_freq"),
    )


def moe_params_to_hf(params: Params, config: MoeConfig, names: ExpertNames) -> dict[str, Any]:
    """Hugging Face names → arrays, every stacked expert kernel split into one tensor per
    expert."""
    tensors = params_to_hf_names(params)
    for i in range(config.num_hidden_layers):
        tensors[names.router.format(i=i)] = tensors.pop(f"model.layers.{i}.mlp.gate.weight")
        for ours, theirs in names.projections.items():
            stacked = tensors.pop(f"model.layers.{i}.mlp.experts.{ours}.weight")  # (out, in, E)
            for e in range(stacked.shape[-1]):
                tensors[names.expert.format(i=i, e=e, proj=theirs)] = stacked[..., e]
    return tensors


def stacked_sources(config: MoeConfig, names: ExpertNames) -> dict[str, tuple[str, ...]]:
    """``HfSpec.stacked``: every stacked expert kernel's path and its per-expert tensor names."""
    return {
        f"layers/{i}/mlp/experts/{ours}/kernel": tuple(
            names.expert.format(i=i, e=e, proj=theirs) for e in range(config.num_local_experts)
        )
        for i in range(config.num_hidden_layers)
        for ours, theirs in names.projections.items()
    }


def moe_config_to_hf(config: MoeConfig) -> None:
    """Refuses what transformers' MoE classes cannot hold (biases: FLAP's compensation).

    Raises:
      ValueError: the config has biases.
    """
    if config.mlp_bias or config.attention_bias or config.qkv_bias:
        raise ValueError(
            "cannot export to Hugging Face: transformers' mixture-of-experts models have no "
            "biases on their linears, and this model has some"
        )


__all__ = [
    "EXPERT_PROJECTIONS",
    "ExpertNames",
    "MOE_DEFAULT_TARGETS",
    "MOE_PARTITION_RULES",
    "MOE_SEQUENTIAL_GROUPS",
    "MoeConfig",
    "MoeForCausalLM",
    "Routed",
    "moe_params_from_hf",
    "moe_params_to_hf",
    "route",
    "stacked_sources",
]
