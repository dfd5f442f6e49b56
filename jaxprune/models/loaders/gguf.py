"""GGUF files (llama.cpp's format) as jaxprune params and tokenizer.

The loader is generic over model families: the file's ``general.architecture`` picks the family
whose record declares it (``Family.gguf``, a :class:`~jaxprune.models.base.GgufSpec`); the tensors
are renamed to Hugging Face names and the metadata becomes a ``config.json``-style dict, and the
family's Hugging Face converters (``Family.hf``) do the rest. What differs from a Hugging Face
checkpoint:

- Dimension order: GGUF lists a tensor's dimensions fastest-varying first, the reverse of NumPy,
  so a linear weight stored as ``[in, out]`` is the NumPy/Hugging Face ``(out, in)`` matrix.
- Quantisation: blocks of Q4_K, Q5_0, Q6_K, Q8_0, ... are dequantised to float32 with
  ``gguf.quants``.
- Rotary layout (LLaMA): llama.cpp rotates adjacent pairs ``(x0, x1), (x2, x3), ...`` while Hugging
  Face rotates the two halves of a head ``(x_i, x_{i + d/2})``. Its LLaMA converter therefore
  reorders the rows of ``q_proj``/``k_proj`` within every head; :func:`unpermute_rotary_rows`
  undoes that. Its Gemma converter does not reorder them.
- Norm offsets (Gemma): llama.cpp stores Gemma's ``(1 + w)`` RMSNorm weights as ``1 + w``.

The tokenizer is rebuilt from the ``tokenizer.ggml.*`` metadata
(:mod:`jaxprune.models.loaders.gguf_tokenizer`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxprune.models.base import GgufSpec, LanguageModel, family_for_gguf_architecture
from jaxprune.models.loaders.gguf_tokenizer import tokenizer_from_gguf_metadata
from jaxprune.models.loaders.pretrained import Pretrained

# llama.cpp's per-block tensor names shared by its LLaMA-like architectures (GGUF stem -> Hugging
# Face name after "model.layers.{i}."); a GgufSpec adds to or replaces these.
COMMON_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
}
_TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# Metadata keys (after "{architecture}.") shared by those architectures -> config.json keys.
COMMON_CONFIG_KEYS = {
    "block_count": "num_hidden_layers",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "context_length": "max_position_embeddings",
}


def load_gguf(path: str | os.PathLike, dtype: Any = jnp.float32) -> Pretrained:
    """Loads a GGUF file of any architecture a registered family reads (``llama``, ``gemma3``).

    Args:
      path: the ``.gguf`` file. Any tensor type ``gguf.quants`` can dequantise is accepted.
      dtype: dtype of the returned params and of the model's computation.

    Returns:
      The model, its params and the tokenizer rebuilt from the file's metadata (``None``, with a
      warning, for tokenizer kinds that cannot be rebuilt exactly).

    Raises:
      ValueError: not a GGUF file, an architecture no family reads, or a feature the family's
        model does not implement (per-frequency RoPE factors, partial rotary, a RoPE scaling type).
    """
    import gguf  # a core dependency, imported only when a GGUF file is read

    path = Path(path)
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path} is not a readable GGUF file ({e})") from e
    meta = alias_architecture({name: field.contents() for name, field in reader.fields.items()})
    try:
        family = family_for_gguf_architecture(meta.get("general.architecture"))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    tensors = {t.name: t for t in reader.tensors}
    if "rope_freqs.weight" in tensors:
        raise ValueError(
            f"{path} carries per-frequency RoPE factors (rope_freqs, LLaMA-3.1 style), which the "
            "GGUF loader does not map to a rope_scaling config; load the Hugging Face checkpoint"
        )
    try:
        config = family.hf.config_from_hf(hf_config(meta, tensors, family.gguf, path))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    hf_tensors = _DequantisedTensors(tensors, family.gguf, config)
    params = family.hf.params_from_hf(hf_tensors, config, dtype)
    return Pretrained(
        model=LanguageModel(config, dtype=dtype),
        params=params,
        tokenizer=tokenizer_from_gguf_metadata(meta, path),
        source=str(path),
    )


def unpermute_rotary_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undoes llama.cpp's per-head row order of a q/k projection (``(out, in)`` layout).

    llama.cpp stores, inside each head of ``d`` rows, row ``2 i + j`` = Hugging Face row
    ``j d/2 + i`` (``i < d/2``, ``j in {0, 1}``), so that rotary pairs are adjacent.

    Args:
      weight: ``(num_heads * head_dim, in)`` in llama.cpp's order.
      num_heads: heads of this projection (key/value heads for ``k_proj``).

    Returns:
      The weight in Hugging Face's order.
    """
    rows = weight.shape[0]
    head_dim = rows // num_heads
    return (
        weight.reshape(num_heads, head_dim // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


class _DequantisedTensors(Mapping):
    """GGUF tensors under their Hugging Face names, dequantised and fixed up on access."""

    def __init__(self, tensors: dict[str, Any], spec: GgufSpec, config: Any):
        self._tensors = tensors
        self._spec = spec
        self._config = config
        block_names = {**COMMON_BLOCK_NAMES, **dict(spec.block_names)}
        self._names = {_hf_name(name, block_names): name for name in tensors}

    def __getitem__(self, hf_name: str) -> np.ndarray:
        from gguf.quants import dequantize

        t = self._tensors[self._names[hf_name]]
        shape = tuple(reversed([int(d) for d in t.shape]))
        try:
            value = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        except NotImplementedError as e:
            raise ValueError(f"tensor {t.name}: {e} (update the gguf package)") from e
        if self._spec.norm_offset and hf_name.endswith("norm.weight"):
            value = value - np.float32(self._spec.norm_offset)
        if self._spec.rotary_rows_permuted:
            if hf_name.endswith(("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias")):
                widths = self._config.layer_widths(int(hf_name.split(".")[2]))
                heads = widths.heads if ".q_proj." in hf_name else widths.kv_heads
                value = unpermute_rotary_rows(value, heads)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _hf_name(name: str, block_names: Mapping[str, str]) -> str:
    """The Hugging Face name of a GGUF tensor; unknown names are kept so errors can show them."""
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in block_names:
        if parts[3] in ("weight", "bias"):  # Qwen2's q/k/v carry biases
            return f"model.layers.{parts[1]}.{block_names[parts[2]]}.{parts[3]}"
    return name


def hf_config(
    meta: Mapping[str, Any], tensors: Mapping[str, Any], spec: GgufSpec, path: Path
) -> dict[str, Any]:
    """A Hugging Face ``config.json``-style dict from GGUF metadata.

    The widths, heads, norm epsilon, RoPE base and context length come from the common keys and
    ``spec.config_keys``; the vocabulary size from the embedding's shape; tied embeddings from the
    absence of ``output.weight``; BOS/EOS from the tokenizer metadata.

    Raises:
      ValueError: missing metadata, per-layer head counts, partial rotary or a vocabulary size
        that disagrees with the embedding.
    """
    arch = spec.architecture
    if "token_embd.weight" not in tensors:
        raise ValueError(f"{path}: GGUF file has no token_embd.weight tensor")
    hidden, vocab = (int(d) for d in tensors["token_embd.weight"].shape)
    d: dict[str, Any] = {"vocab_size": vocab, "tie_word_embeddings": "output.weight" not in tensors}
    for key, name in {**COMMON_CONFIG_KEYS, **dict(spec.config_keys)}.items():
        if f"{arch}.{key}" in meta:
            value = meta[f"{arch}.{key}"]
            # GGUF stores float32; the shortest repr gives the intended decimal (1e-05).
            d[name] = float(str(np.float32(value))) if isinstance(value, float) else value
    for required in (
        "block_count",
        "embedding_length",
        "feed_forward_length",
        "attention.head_count",
    ):
        if f"{arch}.{required}" not in meta:
            raise ValueError(f"{path}: GGUF metadata lacks {arch}.{required}")
    # per-layer widths (a structurally pruned export): arrays become the per-layer config fields
    for key, per_layer in _PER_LAYER_KEYS.items():
        if isinstance(d.get(key), list):
            d[per_layer] = [int(v) for v in d[key]]
            d[key] = d[per_layer][0]
    d["attention_bias"] = "blk.0.attn_q.bias" in tensors
    d["mlp_bias"] = "blk.0.ffn_up.bias" in tensors
    heads = d["num_attention_heads"]
    if not isinstance(heads, int):
        raise ValueError(f"{path}: per-layer head counts ({heads!r}) are not supported")
    head_dim = d.setdefault("head_dim", hidden // heads)
    rotary_dim = meta.get(f"{arch}.rope.dimension_count", head_dim)
    if rotary_dim != head_dim:
        raise ValueError(f"{path}: partial rotary ({rotary_dim} of {head_dim} dims) is unsupported")
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling != "none":
        factor = meta.get(f"{arch}.rope.scaling.factor", 1.0)
        d["rope_scaling"] = {"rope_type": scaling, "factor": float(factor)}
    declared_vocab = meta.get(f"{arch}.vocab_size", vocab)
    if declared_vocab != vocab:
        raise ValueError(f"{path}: {arch}.vocab_size={declared_vocab} but token_embd has {vocab}")
    d["bos_token_id"] = meta.get("tokenizer.ggml.bos_token_id")
    d["eos_token_id"] = meta.get("tokenizer.ggml.eos_token_id")
    return d


_PER_LAYER_KEYS = {
    "num_attention_heads": "num_heads_per_layer",
    "num_key_value_heads": "num_kv_heads_per_layer",
    "intermediate_size": "intermediate_sizes",
}


def alias_architecture(meta: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's ``deci`` (Nemotron-NAS: LLaMA blocks of per-layer widths) read as ``llama``."""
    if meta.get("general.architecture") != "deci":
        return meta
    renamed = {(f"llama.{k[5:]}" if k.startswith("deci.") else k): v for k, v in meta.items()}
    return {**renamed, "general.architecture": "llama"}
