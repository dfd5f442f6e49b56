"""One entry point for every export format, and the checks that pick or refuse one.

=====================  ==================================================================
``hf``                 ``config.json`` + ``model.safetensors``: transformers'
                       ``AutoModelForCausalLM``, vLLM. Every block the same widths.
``gguf``               one ``.gguf`` file: llama.cpp (``llama``, or ``deci`` with per-layer
                       widths), jaxprune's loader. Any widths.
``nemotron-nas``       a ``DeciLMForCausalLM`` directory: vLLM natively; transformers only
                       with ``trust_remote_code`` and NVIDIA's ``modeling_decilm.py``. Any
                       widths (exact zero padding to the layout).
``compressed-tensors`` ``hf`` with the linears stored sparse (bitmask, or 2:4): llm-compressor's
                       format. Opt-in; every block the same widths.
=====================  ==================================================================

Without a format, ``hf`` is chosen when every block has the same widths and ``gguf`` when they
differ. :func:`check_format` decides from the config alone, so the CLI refuses a bad combination
before any weight is read.
"""

from __future__ import annotations

import os
from typing import Any

from jaxprune.models.base import Params

FORMATS = ("hf", "gguf", "nemotron-nas", "compressed-tensors")
_UNIFORM_ONLY = ("hf", "compressed-tensors")

__all__ = [
    "FORMATS",
    "check_format",
    "export_model",
    "uneven_blocks",
]


def uneven_blocks(config: Any) -> tuple[int, Any, Any] | None:
    """``(block, its widths, block 0's widths)`` of the first block that differs, or ``None``."""
    widths = getattr(config, "layer_widths", None)
    if widths is None:
        return None
    first = widths(0)
    for i in range(1, config.num_hidden_layers):
        if widths(i) != first:
            return i, widths(i), first
    return None


def check_format(fmt: str | None, config: Any) -> str:
    """The format to write ``config``'s model in: ``fmt``, or the automatic choice.

    Raises:
      ValueError: an unknown format, uneven widths for ``hf``/``compressed-tensors`` (naming
        ``gguf`` and ``nemotron-nas``), or a family the format does not write.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    uneven = uneven_blocks(config)
    family = getattr(config, "family", None)
    if fmt is None:  # other families' uneven widths: hf's own refusal names the blocks
        return "gguf" if uneven and family == "llama" else "hf"
    if fmt in _UNIFORM_ONLY and uneven:
        i, widths, first = uneven
        raise ValueError(
            f"format {fmt} needs every block the same widths (one head count and one "
            f"intermediate_size in config.json), but block {i} has {tuple(widths)} and block 0 "
            f"{tuple(first)} (heads, kv_heads, mlp); use format gguf (llama.cpp, jaxprune) or "
            "nemotron-nas (vLLM), or prune with --uniform"
        )
    if fmt in ("gguf", "nemotron-nas") and family != "llama":
        raise ValueError(
            f"format {fmt} writes the llama family; this model is {family!r} — use format hf"
        )
    return fmt


def export_model(
    path: str | os.PathLike,
    model: Any,
    params: Params,
    tokenizer: Any = None,
    *,
    format: str | None = None,  # noqa: A002 - the user-facing name (--format)
    overwrite: bool = False,
) -> dict[str, Any]:
    """Writes ``model`` in ``format`` (``None``: ``hf`` for equal blocks, else ``gguf``).

    Args:
      path: the directory (or ``.gguf`` file) to create, atomically.
      model, params, tokenizer: the model (:class:`~jaxprune.models.LanguageModel`), its params
        and tokenizer (or ``None``).
      format: one of :data:`FORMATS`, or ``None``.
      overwrite: replace an existing target.

    Returns:
      The writer's summary with ``"format"`` set to what was written.

    Raises:
      ValueError: what :func:`check_format` refuses, and what the writer refuses.
    """
    from jaxprune.models.export import export_hf
    from jaxprune.models.export_compressed import export_compressed
    from jaxprune.models.export_gguf import export_gguf
    from jaxprune.models.export_nemotron import export_nemotron_nas

    fmt = check_format(format, model.config)
    writer = {
        "hf": export_hf,
        "gguf": export_gguf,
        "nemotron-nas": export_nemotron_nas,
        "compressed-tensors": export_compressed,
    }[fmt]
    summary = writer(path, model, params, tokenizer, overwrite=overwrite)
    sparse_format = summary.pop("format", None)
    return {**summary, "format": fmt, **({"layout": sparse_format} if sparse_format else {})}
