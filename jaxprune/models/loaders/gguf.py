"""GGUF files (llama.cpp's format) as jaxprune params and tokenizer.

Three things differ from a Hugging Face checkpoint:

- Dimension order: GGUF lists a tensor's dimensions fastest-varying first, the reverse of NumPy,
  so a linear weight stored as ``[in, out]`` is the NumPy/Hugging Face ``(out, in)`` matrix.
- Quantisation: blocks of Q4_1, Q8_0, ... are dequantised to float32 with ``gguf.quants``.
- Rotary layout: llama.cpp rotates adjacent pairs ``(x0, x1), (x2, x3), ...`` while Hugging Face
  rotates the two halves of a head ``(x_i, x_{i + d/2})``. Its converter therefore reorders the rows
  of ``q_proj``/``k_proj`` within every head; :func:`unpermute_rotary_rows` undoes that.

The tokenizer is rebuilt from the ``tokenizer.ggml.*`` metadata (GPT-2 style byte-level BPE).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxprune.models.base import LanguageModel
from jaxprune.models.llama import LlamaConfig, params_from_hf
from jaxprune.models.loaders import Pretrained
from jaxprune.models.tokenizer import Tokenizer

# GGUF per-block tensor name -> Hugging Face name (after "model.layers.{i}.").
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# tokenizer.ggml.pre values whose pre-tokenisation we reproduce exactly.
SUPPORTED_PRE_TOKENIZERS = ("gpt-2", "smollm")


def load_gguf(path: str | os.PathLike, dtype: Any = jnp.float32) -> Pretrained:
    """Loads a llama-architecture GGUF file.

    Args:
      path: the ``.gguf`` file. Any tensor type ``gguf.quants`` can dequantise is accepted.
      dtype: dtype of the returned params and of the model's computation.

    Returns:
      The model, its params and the tokenizer rebuilt from the file's metadata (``None``, with a
      warning, for tokenizer kinds other than GPT-2 style byte-level BPE).

    Raises:
      ValueError: not a GGUF file, an architecture other than ``llama``, or a feature the LLaMA
        model does not implement (RoPE scaling, partial rotary).
    """
    gguf = _import_gguf()
    path = Path(path)
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path} is not a readable GGUF file ({e})") from e
    meta = {name: field.contents() for name, field in reader.fields.items()}
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: GGUF architecture {arch!r} is not supported (only 'llama')")
    tensors = {t.name: t for t in reader.tensors}
    if "rope_freqs.weight" in tensors:
        raise ValueError(
            f"{path} carries per-frequency RoPE factors (rope_freqs, LLaMA-3.1 style), which the "
            "GGUF loader does not map to a rope_scaling config; load the Hugging Face checkpoint"
        )
    config = _llama_config(meta, tensors, path)
    hf_tensors = _DequantisedTensors(tensors, config)
    params = params_from_hf(hf_tensors, config, dtype)
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
    """GGUF tensors under their Hugging Face names, dequantised and re-ordered on access."""

    def __init__(self, tensors: dict[str, Any], config: LlamaConfig):
        self._tensors = tensors
        self._config = config
        self._names = {_hf_name(name): name for name in tensors}

    def __getitem__(self, hf_name: str) -> np.ndarray:
        from gguf.quants import dequantize

        t = self._tensors[self._names[hf_name]]
        shape = tuple(reversed([int(d) for d in t.shape]))
        try:
            value = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        except NotImplementedError as e:
            raise ValueError(f"tensor {t.name}: {e} (update the gguf package)") from e
        if hf_name.endswith("q_proj.weight"):
            value = unpermute_rotary_rows(value, self._config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            value = unpermute_rotary_rows(value, self._config.num_key_value_heads)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _hf_name(name: str) -> str:
    """The Hugging Face name of a GGUF tensor; unknown names are kept so errors can show them."""
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK_NAMES and parts[3] == "weight":
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.weight"
    return name


def _llama_config(meta: dict[str, Any], tensors: dict[str, Any], path: Path) -> LlamaConfig:
    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"llama.{key}", default)
        if value is None:
            raise ValueError(f"{path}: GGUF metadata lacks llama.{key}")
        return value

    if "token_embd.weight" not in tensors:
        raise ValueError(f"{path}: GGUF file has no token_embd.weight tensor")
    hidden, vocab = (int(d) for d in tensors["token_embd.weight"].shape)
    heads = get("attention.head_count")
    if not isinstance(heads, int):
        raise ValueError(f"{path}: per-layer head counts ({heads!r}) are not supported")
    head_dim = get("attention.key_length", hidden // heads)
    rotary_dim = get("rope.dimension_count", head_dim)
    if rotary_dim != head_dim:
        raise ValueError(f"{path}: partial rotary ({rotary_dim} of {head_dim} dims) is unsupported")
    scaling = meta.get("llama.rope.scaling.type", "none")
    if scaling != "none":
        raise ValueError(f"{path}: RoPE scaling type {scaling!r} is not supported")
    declared_vocab = meta.get("llama.vocab_size", vocab)
    if declared_vocab != vocab:
        raise ValueError(f"{path}: llama.vocab_size={declared_vocab} but token_embd has {vocab}")

    def float32_value(x: float) -> float:
        # GGUF stores float32; the shortest repr gives the intended decimal (1e-05, not 9.99e-06).
        return float(str(np.float32(x)))

    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=get("embedding_length"),
        intermediate_size=get("feed_forward_length"),
        num_hidden_layers=get("block_count"),
        num_attention_heads=heads,
        num_key_value_heads=get("attention.head_count_kv", heads),
        head_dim=head_dim,
        rms_norm_eps=float32_value(get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float32_value(get("rope.freq_base", 10000.0)),
        tie_word_embeddings="output.weight" not in tensors,
        max_position_embeddings=get("context_length", 2048),
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
    )


def tokenizer_from_gguf_metadata(
    meta: dict[str, Any], source: str | Path = "GGUF"
) -> Tokenizer | None:
    """Rebuilds a GPT-2 style byte-level BPE tokenizer from ``tokenizer.ggml.*`` metadata.

    Args:
      meta: GGUF metadata, key -> Python value (tokens and merges as lists of strings).
      source: named in warnings.

    Returns:
      The tokenizer, or ``None`` (with a warning) when the file has no tokenizer or one of another
      kind (SentencePiece ``llama``, or a pre-tokenizer not in ``SUPPORTED_PRE_TOKENIZERS``).
    """
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "gpt-2")
    if kind != "gpt2" or pre not in SUPPORTED_PRE_TOKENIZERS:
        warnings.warn(
            f"{source}: tokenizer (model={kind!r}, pre={pre!r}) is not supported (only model "
            f"'gpt2' with pre in {SUPPORTED_PRE_TOKENIZERS}); loading the model without one",
            stacklevel=3,
        )
        return None
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))
    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)
    merges = []
    for merge in meta.get("tokenizer.ggml.merges", []):
        pair = merge.split(" ")
        if len(pair) != 2:
            raise ValueError(f"{source}: malformed BPE merge {merge!r}")
        merges.append((pair[0], pair[1]))
    backend = Backend(models.BPE(vocab=vocab, merges=merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        # SmolLM splits every digit into its own word before the GPT-2 regex runs.
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    control, user_defined = 3, 4  # llama.cpp token types (gguf.TokenType)
    # Added tokens are matched in the raw text before BPE, as in the Hugging Face tokenizer.
    added = {kind: [] for kind in (control, user_defined)}
    for i, t in enumerate(types):
        if t in added:
            added[t].append(AddedToken(tokens[i], special=t == control, normalized=False))
    backend.add_special_tokens(added[control])
    backend.add_tokens(added[user_defined])
    return Tokenizer(
        backend,
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
    )


def _import_gguf():
    try:
        import gguf
    except ImportError as e:
        raise ImportError("loading GGUF files needs the gguf package: pip install gguf") from e
    return gguf
