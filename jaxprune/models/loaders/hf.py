"""Hugging Face checkpoints (``config.json`` + safetensors) as jaxprune params.

Hugging Face stores a linear layer's weight as ``(out, in)``; Flax kernels are ``(in, out)``, so
every projection is transposed on the way in. Embeddings ``(vocab, hidden)`` and norm scales keep
their shape. Tensors are read one at a time from memory-mapped files, so a sharded checkpoint never
sits in memory twice.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.models.base import LanguageModel, Params
from jaxprune.models.llama import LlamaConfig
from jaxprune.models.loaders import Pretrained
from jaxprune.models.tokenizer import Tokenizer

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "opt")
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")
_NORMS = ("input_layernorm", "post_attention_layernorm")


class SafetensorsCheckpoint(Mapping):
    """The tensors of a single-file or sharded safetensors checkpoint, read lazily by name.

    Args:
      directory: holds ``model.safetensors`` or ``model.safetensors.index.json`` and its shards.
    """

    def __init__(self, directory: str | os.PathLike):
        directory = Path(directory)
        if (directory / INDEX_FILE).is_file():
            weight_map = json.loads((directory / INDEX_FILE).read_text()).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ValueError(f"{directory / INDEX_FILE} has no 'weight_map'")
            self._files = {name: directory / file for name, file in weight_map.items()}
            absent = sorted({str(p) for p in self._files.values() if not p.is_file()})
            if absent:
                raise ValueError(f"shards listed in {directory / INDEX_FILE} are missing: {absent}")
        elif (directory / SINGLE_FILE).is_file():
            from safetensors import safe_open

            with safe_open(directory / SINGLE_FILE, framework="numpy") as f:
                self._files = dict.fromkeys(f.keys(), directory / SINGLE_FILE)
        else:
            found = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt"))
            hint = (
                f" It has PyTorch pickles ({', '.join(found)}): re-save the model with "
                "`model.save_pretrained(path, safe_serialization=True)`."
                if found
                else ""
            )
            raise ValueError(f"{directory} holds neither {SINGLE_FILE} nor {INDEX_FILE}.{hint}")

    def __getitem__(self, name: str) -> np.ndarray:
        from safetensors import safe_open

        # The numpy backend of safetensors cannot represent bfloat16 (the usual dtype of LLM
        # checkpoints); the flax backend can, and on the CPU device np.asarray is a view.
        with jax.default_device(jax.devices("cpu")[0]):
            with safe_open(self._files[name], framework="flax") as f:
                return np.asarray(f.get_tensor(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def load_hf_checkpoint(directory: str | os.PathLike, dtype: Any = jnp.float32) -> Pretrained:
    """Loads a Hugging Face causal-LM directory (``config.json`` + safetensors weights).

    Args:
      directory: a directory written by ``save_pretrained`` (single-file or sharded safetensors);
        ``model_type`` must be one of ``llama``, ``mistral``, ``opt``. Its tokenizer, if any, is
        loaded too.
      dtype: dtype of the returned params and of the model's computation.

    Returns:
      The model, its params (nested dict, Flax ``(in, out)`` kernels) and tokenizer (or ``None``).

    Raises:
      ValueError: unsupported ``model_type``, missing/unknown/misshapen tensors, or no weights.
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{directory} is not a Hugging Face model directory (no config.json)")
    hf_config = json.loads(config_path.read_text())
    model_type = hf_config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{config_path}: model_type {model_type!r} is not supported; supported model types: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    tensors = SafetensorsCheckpoint(directory)
    if model_type == "opt":
        try:
            from jaxprune.models import opt
        except ImportError as e:
            raise ValueError(
                f"model_type 'opt' needs jaxprune.models.opt, which could not be imported ({e})"
            ) from e
        config = opt.OPTConfig.from_dict(hf_config)
        params = opt.params_from_hf_tensors({name: tensors[name] for name in tensors}, config)
        params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
    else:
        config = llama_config_from_hf(hf_config)
        params = llama_params_from_hf(tensors, config, dtype)
    return Pretrained(
        model=LanguageModel(config, dtype=dtype),
        params=params,
        tokenizer=Tokenizer.from_directory(directory)
        if Tokenizer.in_directory(directory)
        else None,
        source=str(directory),
    )


def llama_config_from_hf(hf_config: dict[str, Any]) -> LlamaConfig:
    """A :class:`LlamaConfig` from a LLaMA/Mistral ``config.json`` dict (any transformers version).

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
    for flag in ("attention_bias", "mlp_bias"):
        if d.get(flag):
            raise ValueError(f"{flag}=true is not supported by the LLaMA model (no biases)")
    if d.get("sliding_window") is not None:
        warnings.warn(
            f"sliding_window={d['sliding_window']} is ignored: attention is full-causal, which is "
            "exact only for sequences up to the window length",
            stacklevel=3,
        )
    return LlamaConfig.from_dict(d)


def llama_params_from_hf(
    tensors: Mapping[str, np.ndarray], config: LlamaConfig, dtype: Any = jnp.float32
) -> Params:
    """Converts Hugging Face LLaMA tensors (``model.layers.0.mlp.up_proj.weight`` ...) to params.

    Args:
      tensors: name -> array in Hugging Face layout (linear weights ``(out, in)``).
      config: the model config, used to check every shape.
      dtype: dtype of the returned arrays.

    Returns:
      Nested-dict params in the layout of :class:`jaxprune.models.LanguageModel`.

    Raises:
      ValueError: naming missing, unexpected or misshapen tensors.
    """
    c = config
    q_out, kv_out = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    linear_shapes = {  # HF (out, in)
        "q_proj": (q_out, c.hidden_size),
        "k_proj": (kv_out, c.hidden_size),
        "v_proj": (kv_out, c.hidden_size),
        "o_proj": (c.hidden_size, q_out),
        "gate_proj": (c.intermediate_size, c.hidden_size),
        "up_proj": (c.intermediate_size, c.hidden_size),
        "down_proj": (c.hidden_size, c.intermediate_size),
    }
    # name -> (params path, expected HF shape, whether it is a linear weight to transpose)
    plan: dict[str, tuple[tuple, tuple[int, ...], bool]] = {
        "model.embed_tokens.weight": (
            ("embed_tokens", "embedding"),
            (c.vocab_size, c.hidden_size),
            False,
        ),
        "model.norm.weight": (("norm", "scale"), (c.hidden_size,), False),
    }
    if not c.tie_word_embeddings:
        plan["lm_head.weight"] = (("lm_head", "kernel"), (c.vocab_size, c.hidden_size), True)
    for i in range(c.num_hidden_layers):
        prefix = f"model.layers.{i}"
        for group, names in (("self_attn", _ATTN), ("mlp", _MLP)):
            for n in names:
                path = ("layers", i, group, n, "kernel")
                plan[f"{prefix}.{group}.{n}.weight"] = (path, linear_shapes[n], True)
        for n in _NORMS:
            plan[f"{prefix}.{n}.weight"] = (("layers", i, n, "scale"), (c.hidden_size,), False)

    # Tied checkpoints may still carry a copy of the embedding as lm_head (transformers ties it back
    # on load), and old ones store the rotary inv_freq buffer; neither is a parameter here.
    ignorable = {"lm_head.weight"} if c.tie_word_embeddings else set()
    unexpected = sorted(
        n for n in tensors if n not in plan and n not in ignorable and not n.endswith("inv_freq")
    )
    missing = sorted(n for n in plan if n not in tensors)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint tensors do not match a {c.num_hidden_layers}-layer LLaMA model "
            f"(tie_word_embeddings={c.tie_word_embeddings}): missing {_preview(missing)}; "
            f"unexpected {_preview(unexpected)}"
        )
    params: Params = {}
    for name, (path, shape, transpose) in plan.items():
        value = tensors[name]
        if tuple(value.shape) != shape:
            raise ValueError(f"tensor {name} has shape {tuple(value.shape)}, expected {shape}")
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(value.T if transpose else value, dtype=dtype)
    return params


def _preview(names: list[str], limit: int = 8) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
