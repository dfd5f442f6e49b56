"""Phi-3 (transformers' ``Phi3ForCausalLM``) on the LLaMA modules, its fused projections split.

Phi-3 computes what a LLaMA block computes, but stores the query, key and value projections as
one ``qkv_proj`` (rows: queries, then keys, then values) and the MLP's gate and up projections as
one ``gate_up_proj`` (rows: gate, then up). Pruning methods must see them as the three / two
linears they are — a fused kernel would pool the statistics and scores of different linears, and
a structured prune would slice across them — so they are split on load into ``q_proj``/``k_proj``/
``v_proj`` and ``gate_proj``/``up_proj`` kernels and fused again on export. Long-context RoPE
(``longrope``, the 128k models) and partial rotary are refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxprune.models.base import GgufSpec, HfSpec, Params, register_family
from jaxprune.models.hf_tensors import params_to_hf_names
from jaxprune.models.llama import config_from_hf as llama_config_from_hf
from jaxprune.models.llama import hf_config_common, llama_like_family
from jaxprune.models.llama import params_from_hf as llama_params_from_hf
from jaxprune.models.llama_config import LlamaConfig

_FUSED = {
    "self_attn.qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "mlp.gate_up_proj": ("gate_proj", "up_proj"),
}


@dataclasses.dataclass(frozen=True)
class Phi3Config(LlamaConfig):
    """A Phi-3 config: :class:`LlamaConfig` (its fused projections are a storage format)."""

    rms_norm_eps: float = 1e-5
    # Kept for the export: transformers' Phi-3 defaults it to 32000, outside small vocabularies.
    pad_token_id: int | None = None

    family = "phi3"


def config_from_hf(hf_config: dict[str, Any]) -> Phi3Config:
    """A :class:`Phi3Config` from a ``phi3`` ``config.json`` dict.

    Raises:
      ValueError: long-context RoPE (``longrope``/``su``/``yarn``), partial rotary or another
        activation than SiLU.
    """
    d = dict(hf_config)
    rope = {**(d.get("rope_scaling") or {}), **(d.get("rope_parameters") or {})}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ValueError(f"Phi-3 RoPE type {kind!r} is not supported (only the 4k models' default)")
    partial = rope.get("partial_rotary_factor", d.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise ValueError(f"partial_rotary_factor={partial} is not supported (only 1.0)")
    d.pop("rope_scaling", None)
    return llama_config_from_hf(d, Phi3Config)


def _split_rows(config: LlamaConfig, layer: int) -> dict[str, tuple[int, ...]]:
    """Rows of each part of the fused weights of ``layer``."""
    heads, kv_heads, width = config.layer_widths(layer)
    hd = config.head_dim
    return {
        "self_attn.qkv_proj": (heads * hd, kv_heads * hd, kv_heads * hd),
        "mlp.gate_up_proj": (width, width),
    }


class _SplitTensors(Mapping):
    """A Phi-3 checkpoint's tensors under LLaMA names: fused weights read as their parts."""

    def __init__(self, tensors: Mapping[str, np.ndarray], config: LlamaConfig):
        self._tensors, self._config = tensors, config
        self._parts: dict[str, tuple[str, int, int]] = {}
        for name in tensors:
            fused = next((f for f in _FUSED if name.endswith(f"{f}.weight")), None)
            if fused is None:
                continue
            layer = int(name.split(".")[2])
            start = 0
            for part, rows in zip(_FUSED[fused], _split_rows(config, layer)[fused], strict=True):
                group = fused.split(".")[0]
                self._parts[f"model.layers.{layer}.{group}.{part}.weight"] = (
                    name,
                    start,
                    start + rows,
                )
                start += rows
            if start != tensors[name].shape[0]:
                raise ValueError(
                    f"tensor {name} has {tensors[name].shape[0]} rows, expected {start} "
                    "(the config's q + k + v or gate + up widths)"
                )
        fused_names = {name for name, _, _ in self._parts.values()}
        self._names = [n for n in tensors if n not in fused_names] + list(self._parts)

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._parts:
            fused, start, stop = self._parts[name]
            return np.asarray(self._tensors[fused])[start:stop]
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def params_from_hf(
    tensors: Mapping[str, np.ndarray], config: Phi3Config, dtype: Any = jnp.float32
) -> Params:
    """Phi-3 tensors to params, ``qkv_proj`` and ``gate_up_proj`` split into their linears.

    Raises:
      ValueError: naming missing, unexpected or misshapen tensors.
    """
    return llama_params_from_hf(_SplitTensors(tensors, config), config, dtype)


def params_to_hf(params: Params, config: Phi3Config) -> dict[str, Any]:
    """Hugging Face Phi-3 names → arrays, q/k/v and gate/up fused again."""
    tensors = params_to_hf_names(params)
    for i in range(config.num_hidden_layers):
        for fused, parts in _FUSED.items():
            group = fused.split(".")[0]
            names = [f"model.layers.{i}.{group}.{part}.weight" for part in parts]
            tensors[f"model.layers.{i}.{fused}.weight"] = jnp.concatenate(
                [tensors.pop(n) for n in names], axis=0
            )
    return tensors


def config_to_hf(config: Phi3Config) -> dict[str, Any]:
    """The ``phi3`` ``config.json`` of ``config``.

    Raises:
      ValueError: blocks of different widths, or biases (transformers' Phi-3 has none).
    """
    if config.attention_bias or config.mlp_bias or config.qkv_bias or config.qk_norm:
        raise ValueError(
            "cannot export to Hugging Face: transformers' Phi-3 has no biases, and this model "
            "carries FLAP's compensation biases; prune with bias_compensation=False "
            "(jaxprune prune --no-bias-compensation) to export it"
        )
    return {
        "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3",
        "pad_token_id": config.pad_token_id,
        **hf_config_common(config),
    }


FAMILY = register_family(
    llama_like_family(
        "phi3",
        Phi3Config,
        HfSpec(("phi3",), config_from_hf, params_from_hf, config_to_hf, params_to_hf),
        # llama.cpp's Phi-3 converter keeps the fused tensors (attn_qkv, ffn_up = gate + up).
        GgufSpec(
            "phi3",
            (
                ("ffn_norm", "post_attention_layernorm"),
                ("attn_qkv", "self_attn.qkv_proj"),
                ("ffn_up", "mlp.gate_up_proj"),
            ),
        ),
    )
)
