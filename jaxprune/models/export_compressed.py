"""Export sparse models stored sparse: llm-compressor's ``compressed-tensors`` format.

A Hugging Face directory (:func:`~jaxprune.models.export.export_hf`) whose decoder linears are
stored compressed, with a ``quantization_config`` in ``config.json`` that names the format:

- ``sparse-bitmask`` (any sparsity): per weight ``(out, in)``, ``compressed`` holds the nonzero
  values row by row, ``bitmask`` one bit per entry (``uint8``, rows packed little-endian,
  ``ceil(in / 8)`` bytes a row), ``row_offsets`` where each row's values start, ``shape``.
- ``sparse-24-bitmask`` (every linear 2:4 along its input axis): ``compressed`` holds exactly two
  values of every four, ``(out, in / 2)``, with the same ``bitmask`` and ``shape`` (a column).
  A group of four with fewer than two nonzeros stores zeros in its free slots, so the
  decompressed weight is still exactly ours.

The layouts are those of the ``compressed-tensors`` package (versions up to 0.14, the last with
sparse compressors), which decompresses the directory back to our weights bit for bit (a zero
is stored as a position, so a pruned ``-0.0`` comes back as ``+0.0``); vLLM and
transformers read the same ``quantization_config``. Embeddings, norms and the LM head stay dense.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from jaxprune.core.files import atomic_target, new_target, write_json, written_directory
from jaxprune.models.base import Params
from jaxprune.models.export import hf_directory, write_hf_directory

FORMATS = ("sparse-bitmask", "sparse-24-bitmask")
# The compressed-tensors release whose sparse layouts this module writes.
FORMAT_VERSION = "0.14.0.1"

__all__ = ["FORMATS", "bitmask_tensors", "export_compressed", "is_two_four", "two_four_tensors"]


def _is_linear(name: str, value: np.ndarray) -> bool:
    """A decoder block's linear weight (2-D, inside ``layers``); norms are 1-D."""
    return ".layers." in name and name.endswith(".weight") and value.ndim == 2


def is_two_four(weight: np.ndarray) -> bool:
    """At most two nonzeros in every four consecutive inputs of every row (``(out, in)``)."""
    if weight.shape[-1] % 4:
        return False
    groups = (weight != 0).reshape(weight.shape[0], -1, 4)
    return bool((groups.sum(-1) <= 2).all())


def bitmask_tensors(prefix: str, weight: np.ndarray) -> dict[str, np.ndarray]:
    """``sparse-bitmask`` tensors of one ``(out, in)`` weight, named ``{prefix}.<part>``."""
    keep = weight != 0
    counts = keep.sum(-1)
    return {
        f"{prefix}.shape": np.asarray(weight.shape, np.int64),
        f"{prefix}.compressed": weight[keep],
        f"{prefix}.bitmask": np.packbits(keep, axis=-1, bitorder="little"),
        f"{prefix}.row_offsets": (np.cumsum(counts) - counts).astype(np.int64),
    }


def two_four_tensors(prefix: str, weight: np.ndarray) -> dict[str, np.ndarray]:
    """``sparse-24-bitmask`` tensors of one 2:4 ``(out, in)`` weight.

    Raises:
      ValueError: a group of four holds more than two nonzeros.
    """
    if not is_two_four(weight):
        raise ValueError(f"{prefix}.weight is not 2:4 sparse along its input axis")
    rows, cols = weight.shape
    groups = (weight != 0).reshape(rows, cols // 4, 4)
    # fill free slots with the first zero positions: two stored values in every group of four
    missing = 2 - groups.sum(-1, keepdims=True)
    free_rank = np.cumsum(~groups, axis=-1)
    keep = (groups | (~groups & (free_rank <= missing))).reshape(rows, cols)
    return {
        f"{prefix}.shape": np.asarray(weight.shape, np.int64).reshape(-1, 1),
        f"{prefix}.compressed": weight[keep].reshape(rows, cols // 2),
        f"{prefix}.bitmask": np.packbits(keep, axis=-1, bitorder="little"),
    }


def _compress(dense: dict[str, np.ndarray], fmt: str) -> tuple[dict[str, np.ndarray], float]:
    out, zeros, total = {}, 0, 0
    encode = two_four_tensors if fmt == "sparse-24-bitmask" else bitmask_tensors
    for name, value in dense.items():
        if not _is_linear(name, value):
            out[name] = value
            continue
        zeros += int((value == 0).sum())
        total += value.size
        out.update(encode(name.removesuffix(".weight"), value))
    return out, zeros / max(total, 1)


def choose_format(dense: dict[str, np.ndarray]) -> str:
    """``sparse-24-bitmask`` when every decoder linear is 2:4, else ``sparse-bitmask``.

    Raises:
      ValueError: no decoder linear has a zero (nothing to compress).
    """
    linears = [v for k, v in dense.items() if _is_linear(k, v)]
    if not any((v == 0).any() for v in linears):
        raise ValueError(
            "the model has no zero weights in its linears, so compressed-tensors would store it "
            "larger than dense; prune it first or export with format='hf'"
        )
    return "sparse-24-bitmask" if all(is_two_four(v) for v in linears) else "sparse-bitmask"


def export_compressed(
    directory: str | os.PathLike,
    model: Any,
    params: Params,
    tokenizer: Any = None,
    *,
    overwrite: bool = False,
    sparse_format: str | None = None,
) -> dict[str, Any]:
    """Writes a Hugging Face directory with the linears in compressed-tensors' sparse layout.

    Args:
      directory: the directory to create (atomically: nothing is left there on failure).
      model, params, tokenizer: as for :func:`~jaxprune.models.export.export_hf`.
      overwrite: replace an existing directory.
      sparse_format: ``"sparse-bitmask"``, ``"sparse-24-bitmask"`` or ``None`` (2:4 when every
        decoder linear is 2:4, else bitmask).

    Returns:
      ``{"path", "config", "tensors", "bytes", "format", "sparsity"}``.

    Raises:
      ValueError: what :func:`export_hf` refuses, an unknown format, a 2:4 format for weights
        that are not 2:4, a model without zeros, or an existing target.
    """
    from safetensors.numpy import load_file, save_file

    if sparse_format not in (*FORMATS, None):
        raise ValueError(f"unknown sparse format {sparse_format!r}; choose one of {FORMATS}")
    target = new_target(directory, overwrite)
    with atomic_target(target) as tmp:
        write_hf_directory(tmp, *hf_directory(model, params), tokenizer)
        dense = load_file(str(tmp / "model.safetensors"))
        fmt = sparse_format or choose_format(dense)
        tensors, sparsity = _compress(dense, fmt)
        config = json.loads((tmp / "config.json").read_text())
        config["quantization_config"] = {
            # no quantization fields: their presence would announce a quantized model
            "quant_method": "compressed-tensors",
            "version": FORMAT_VERSION,
            "sparsity_config": {
                "format": fmt,
                "global_sparsity": sparsity,
                "sparsity_structure": "2:4" if fmt == "sparse-24-bitmask" else "unstructured",
                "targets": ["Linear"],
                "ignore": ["lm_head"],
                "registry_requires_subclass": False,
            },
        }
        write_json(tmp / "config.json", config)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return {**written_directory(target, config, len(tensors)), "format": fmt, "sparsity": sparsity}
