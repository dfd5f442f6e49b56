"""Export blocks of different widths as a Hugging Face directory in NVIDIA's Nemotron-NAS layout.

Nemotron-NAS (``DeciLMForCausalLM``, ``model_type: nemotron-nas``; vLLM and TensorRT-LLM load it
natively, transformers only with ``trust_remote_code=True`` and the model's own
``modeling_decilm.py``) is LLaMA with a ``block_configs`` list, one entry per block:

- ``attention.n_heads_in_group``: query heads per key/value head; the block has
  ``num_attention_heads / n_heads_in_group`` key/value heads. The query head count is one for all
  blocks.
- ``ffn.ffn_mult``: the MLP width is ``round_up(int(2 · ffn_mult · hidden / 3), 256)``.

So the layout holds per-block key/value heads and MLP widths in multiples of 256, but not per-block
query heads. A shrunk model is written **exactly** by zero padding: each key/value group gets
query heads with zero ``q_proj`` rows (and biases) and zero ``o_proj`` columns up to the common
head count (a zero query attends uniformly, and its output is multiplied by zero columns), and
each MLP gets channels with zero ``gate_proj``/``up_proj`` rows and ``down_proj`` columns up to the
next multiple of 256 (``silu(0) · 0 = 0``). The padded model computes the same function; the
padding costs file size, which the returned summary reports.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import numpy as np

from jaxprune.core.files import atomic_target, new_target, write_json, written_directory
from jaxprune.models.base import Params
from jaxprune.models.export_llama import check_llama_writer, llama_block_widths

MLP_QUANTUM = 256  # DeciLM's _ffn_mult_to_intermediate_size rounds up to this

__all__ = ["ffn_mult_to_width", "export_nemotron_nas", "nemotron_config", "padded_tensors"]


def ffn_mult_to_width(ffn_mult: float, hidden: int) -> int:
    """The MLP width a ``ffn_mult`` gives (DeciLM's ``_ffn_mult_to_intermediate_size``)."""
    width = int(2 * ffn_mult * hidden / 3)
    return width if width % MLP_QUANTUM == 0 else width + MLP_QUANTUM - width % MLP_QUANTUM


def _common_heads(widths: list[tuple[int, int, int]]) -> int:
    """The fewest query heads every block reaches by padding each group (a multiple of kv)."""
    kv_lcm = math.lcm(*(kv for _, kv, _ in widths))
    heads = max(h for h, _, _ in widths)
    return -(-heads // kv_lcm) * kv_lcm


def _pad_rows(x: np.ndarray, groups: int, per_group: int, width: int) -> np.ndarray:
    """``(groups · g · width, ...)`` rows → ``(groups · per_group · width, ...)``, zeros appended
    at the end of every group."""
    shaped = x.reshape(groups, -1, width, *x.shape[1:])
    pad = [(0, 0), (0, per_group - shaped.shape[1])] + [(0, 0)] * (shaped.ndim - 2)
    return np.pad(shaped, pad).reshape(groups * per_group * width, *x.shape[1:])


def padded_tensors(params: Params, config: Any) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Hugging Face names → ``(out, in)`` arrays with the padding, and the ``block_configs``."""
    hd, hidden = config.head_dim, config.hidden_size
    widths = [llama_block_widths(params["layers"][i], hd) for i in sorted(params["layers"])]
    heads = _common_heads(widths)
    tensors = {
        "model.embed_tokens.weight": np.asarray(params["embed_tokens"]["embedding"]),
        "model.norm.weight": np.asarray(params["norm"]["scale"]),
    }
    if not config.tie_word_embeddings:
        tensors["lm_head.weight"] = np.ascontiguousarray(np.asarray(params["lm_head"]["kernel"]).T)
    blocks = []
    for i, (_, kv, mlp) in zip(sorted(params["layers"]), widths, strict=True):
        block, prefix = params["layers"][i], f"model.layers.{i}"
        per_group, ffn = heads // kv, -(-mlp // MLP_QUANTUM) * MLP_QUANTUM
        pads = {  # (name, leaf) -> rows of the (out, in) array padded as (groups, per group, size)
            ("q_proj", "weight"): (kv, per_group, hd),
            ("q_proj", "bias"): (kv, per_group, hd),
            ("gate_proj", "weight"): (1, ffn, 1),
            ("gate_proj", "bias"): (1, ffn, 1),
            ("up_proj", "weight"): (1, ffn, 1),
            ("up_proj", "bias"): (1, ffn, 1),
        }
        columns = {"o_proj": (kv, per_group, hd), "down_proj": (1, ffn, 1)}
        for group, names in (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                             ("mlp", ("gate_proj", "up_proj", "down_proj"))):  # fmt: skip
            for name in names:
                linear = block[group][name]
                for leaf in ("weight", "bias"):
                    if leaf == "bias" and "bias" not in linear:
                        continue
                    value = np.asarray(linear["kernel"] if leaf == "weight" else linear["bias"])
                    value = value.T if leaf == "weight" else value
                    if (name, leaf) in pads:
                        value = _pad_rows(value, *pads[name, leaf])
                    if name in columns and leaf == "weight":
                        value = _pad_rows(value.T, *columns[name]).T
                    tensors[f"{prefix}.{group}.{name}.{leaf}"] = np.ascontiguousarray(value)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"{prefix}.{norm}.weight"] = np.asarray(block[norm]["scale"])
        # int() may land one below ffn in floating point; rounding up to 256 restores it
        ffn_mult = ffn * 3 / (2 * hidden)
        blocks.append(
            {
                "attention": {
                    "n_heads_in_group": per_group,
                    "no_op": False,
                    "replace_with_linear": False,
                    "sparsify": None,
                },
                "ffn": {
                    "ffn_mult": ffn_mult,
                    "no_op": False,
                    "replace_with_linear": False,
                    "sparsify": None,
                },
            }  # fmt: skip
        )
    return tensors, blocks


def nemotron_config(config: Any, blocks: list[dict], heads: int, dtype: str) -> dict[str, Any]:
    """The ``config.json`` of the Nemotron-NAS layout."""
    c = config.to_dict()
    return {
        "architectures": ["DeciLMForCausalLM"],
        "model_type": "nemotron-nas",
        "auto_map": {
            "AutoConfig": "configuration_decilm.DeciLMConfig",
            "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM",
        },
        "block_configs": blocks,
        "num_attention_heads": heads,
        "num_key_value_heads": None,
        "hidden_act": "silu",
        "attention_bias": bool(c.get("attention_bias", False)),
        "mlp_bias": bool(c.get("mlp_bias", False)),
        "attention_dropout": 0.0,
        "pretraining_tp": 1,
        **{k: c[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "head_dim")},
        **{k: c[k] for k in ("rms_norm_eps", "rope_theta", "tie_word_embeddings")},
        "rope_scaling": None,
        **{k: c[k] for k in ("max_position_embeddings", "bos_token_id", "eos_token_id")},
        "torch_dtype": dtype,
    }


def export_nemotron_nas(
    directory: str | os.PathLike,
    model: Any,
    params: Params,
    tokenizer: Any = None,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Writes a Nemotron-NAS (``DeciLMForCausalLM``) directory; blocks may differ in widths.

    Args:
      directory: the directory to create (atomically: nothing is left there on failure).
      model, params, tokenizer: as for :func:`~jaxprune.models.export.export_hf` (LLaMA family).
      overwrite: replace an existing directory.

    Returns:
      ``{"path", "config", "tensors", "bytes", "padding"}``; ``padding`` is the number of zero
      parameters the layout needed.

    Raises:
      ValueError: a family other than LLaMA, RoPE scaling, or an existing target.
    """
    from safetensors.numpy import save_file

    config = model.config
    check_llama_writer(config, "Nemotron-NAS")
    target = new_target(directory, overwrite)
    tensors, blocks = padded_tensors(params, config)
    heads = tensors["model.layers.0.self_attn.q_proj.weight"].shape[0] // config.head_dim
    dtypes = {v.dtype.name for v in tensors.values()}
    hf_config = nemotron_config(
        config, blocks, heads, dtypes.pop() if len(dtypes) == 1 else "float32"
    )
    params_size = sum(np.size(x) for x in jax.tree_util.tree_leaves(params))
    padding = sum(v.size for v in tensors.values()) - params_size
    with atomic_target(target) as tmp:
        write_json(tmp / "config.json", hf_config)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp)
    return {**written_directory(target, hf_config, len(tensors)), "padding": int(padding)}
