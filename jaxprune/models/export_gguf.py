"""Export to GGUF (llama.cpp's format), blocks of different widths included.

A LLaMA-family model is written as llama.cpp's converter writes it: GGUF tensor names
(``blk.{i}.attn_q.weight`` ...), Hugging Face ``(out, in)`` matrices, the rows of ``attn_q`` and
``attn_k`` (weights and biases) reordered within every head so that rotary pairs are adjacent, and
the tokenizer as ``tokenizer.ggml.*`` metadata (byte-level BPE tokenizers; other kinds are left
out and reported).

Widths: when every block has the same widths the file is llama.cpp's ``llama`` architecture with
scalar ``feed_forward_length`` / ``attention.head_count`` / ``attention.head_count_kv``. When
blocks differ those three keys are per-layer arrays, and the architecture is ``deci`` (llama.cpp's
name for NVIDIA's Nemotron-NAS/DeciLM, the same tensors and rotary layout): llama.cpp's ``llama``
loader sizes every block's tensors from layer 0's widths, its ``deci`` loader from the arrays.
``attention.key_length`` is always written, as the head size no longer follows from the hidden
size and the head count. jaxprune's GGUF loader reads both back bit for bit (float32, float16
and bfloat16 are stored as they are; nothing is quantised).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from jaxprune.core.files import atomic_target, new_target
from jaxprune.models.base import Params
from jaxprune.models.export_llama import check_llama_writer, llama_block_widths

_LOG = logging.getLogger("jaxprune")
_BLOCK = {
    ("self_attn", "q_proj"): "attn_q",
    ("self_attn", "k_proj"): "attn_k",
    ("self_attn", "v_proj"): "attn_v",
    ("self_attn", "o_proj"): "attn_output",
    ("mlp", "gate_proj"): "ffn_gate",
    ("mlp", "up_proj"): "ffn_up",
    ("mlp", "down_proj"): "ffn_down",
}
_NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}

__all__ = ["export_gguf", "gguf_tensors", "permute_rotary_rows"]


def permute_rotary_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's row order of a q/k projection (``(out, in)`` or a bias ``(out,)``).

    Within each head of ``d`` rows, GGUF row ``2 i + j`` is Hugging Face row ``j d/2 + i``: the
    inverse of :func:`jaxprune.models.loaders.gguf.unpermute_rotary_rows`.
    """
    head_dim = weight.shape[0] // num_heads
    return (
        weight.reshape(num_heads, 2, head_dim // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def gguf_tensors(params: Params, config: Any) -> dict[str, np.ndarray]:
    """GGUF names → NumPy arrays in llama.cpp's layout (widths read from ``params``)."""
    out = {
        "token_embd.weight": np.asarray(params["embed_tokens"]["embedding"]),
        "output_norm.weight": np.asarray(params["norm"]["scale"]),
    }
    if not config.tie_word_embeddings:
        out["output.weight"] = np.asarray(params["lm_head"]["kernel"]).T
    for i in sorted(params["layers"]):
        block = params["layers"][i]
        heads, kv_heads, _ = llama_block_widths(block, config.head_dim)
        for (group, name), stem in _BLOCK.items():
            linear = block[group][name]
            for leaf, value in (("weight", linear["kernel"]), ("bias", linear.get("bias"))):
                if value is None:
                    continue
                value = np.asarray(value).T if leaf == "weight" else np.asarray(value)
                if name in ("q_proj", "k_proj"):
                    value = permute_rotary_rows(value, heads if name == "q_proj" else kv_heads)
                out[f"blk.{i}.{stem}.{leaf}"] = value
        for norm, stem in _NORMS.items():
            out[f"blk.{i}.{stem}.weight"] = np.asarray(block[norm]["scale"])
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _add_tokenizer(writer: Any, tokenizer: Any) -> bool:
    """Byte-level BPE tokenizers as llama.cpp's ``gpt2`` kind; ``False`` for other kinds."""
    import json

    model = json.loads(tokenizer.backend.to_str())["model"]
    if model.get("type") != "BPE":
        return False
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.get)
    special = {t.content for t in tokenizer.backend.get_added_tokens_decoder().values()}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model["merges"]])
    if tokenizer.bos_token_id is not None:
        writer.add_bos_token_id(tokenizer.bos_token_id)
    if tokenizer.eos_token_id is not None:
        writer.add_eos_token_id(tokenizer.eos_token_id)
    return True


def _add_tensor(writer: Any, name: str, value: np.ndarray) -> None:
    import gguf

    if value.dtype in (np.float32, np.float16):
        writer.add_tensor(name, value)
        return
    if value.dtype.name != "bfloat16":
        raise ValueError(f"tensor {name} has dtype {value.dtype}; GGUF export writes f32/f16/bf16")
    bf16 = gguf.GGMLQuantizationType.BF16
    raw = gguf.quants.quantize(value.astype(np.float32), bf16)  # exact: bf16 values round-trip
    writer.add_tensor(name, raw, raw_dtype=bf16)


def export_gguf(
    path: str | os.PathLike,
    model: Any,
    params: Params,
    tokenizer: Any = None,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Writes a GGUF file llama.cpp runs and :func:`jaxprune.load_pretrained` reads back exactly.

    Args:
      path: the ``.gguf`` file to create (atomically: nothing is left there on failure).
      model: the :class:`~jaxprune.models.LanguageModel` (LLaMA family; blocks may differ).
      params: its params (dense, pruned or structurally shrunk).
      tokenizer: a :class:`~jaxprune.models.tokenizer.Tokenizer` (byte-level BPE is written) or
        ``None``.
      overwrite: replace an existing file.

    Returns:
      ``{"path", "architecture", "tensors", "bytes", "tokenizer", "per_layer"}``.

    Raises:
      ValueError: a family other than LLaMA, RoPE scaling (llama.cpp stores it as a tensor the
        loader does not read), an unsupported dtype, or an existing target.
    """
    import gguf

    config = model.config
    check_llama_writer(config, "GGUF")
    target = new_target(path, overwrite, kind="path")
    widths = [
        llama_block_widths(params["layers"][i], config.head_dim) for i in sorted(params["layers"])
    ]
    per_layer = len(set(widths)) > 1
    heads, kv_heads, mlp = ([w[k] for w in widths] for k in range(3))
    arch = "deci" if per_layer else "llama"
    tensors = gguf_tensors(params, config)
    with atomic_target(target, directory=False) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        writer.add_block_count(len(widths))
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_feed_forward_length(mlp if per_layer else mlp[0])
        writer.add_head_count(heads if per_layer else heads[0])
        writer.add_head_count_kv(kv_heads if per_layer else kv_heads[0])
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_rope_freq_base(config.rope_theta)
        writer.add_rope_dimension_count(config.head_dim)
        writer.add_vocab_size(config.vocab_size)
        with_tokenizer = tokenizer is not None and _add_tokenizer(writer, tokenizer)
        if tokenizer is not None and not with_tokenizer:
            _LOG.warning("GGUF export: the tokenizer is not byte-level BPE; written without it")
        for name, value in tensors.items():
            _add_tensor(writer, name, value)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return {
        "path": str(target),
        "architecture": arch,
        "tensors": len(tensors),
        "bytes": target.stat().st_size,
        "tokenizer": with_tokenizer,
        "per_layer": per_layer,
    }
