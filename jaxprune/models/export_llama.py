"""What the writers of the llama family only (GGUF, Nemotron-NAS) share: the refusal of what they
cannot hold, and a block's widths read from its params.

Kept apart from :mod:`~jaxprune.models.export_formats` (which dispatches to these writers) so the
writers never import their dispatcher.
"""

from __future__ import annotations

from typing import Any

from jaxprune.models.base import Params

__all__ = ["check_llama_writer", "llama_block_widths"]


def check_llama_writer(config: Any, name: str) -> None:
    """Refuses, for the writers of the llama family only (``name``: GGUF, Nemotron-NAS), another
    family or RoPE scaling (neither llama.cpp's loader nor DeciLM reads LLaMA-3.1's).

    Raises:
      ValueError: naming the family, or the RoPE scaling, and ``format='hf'``.
    """
    family = getattr(config, "family", None)
    if family != "llama":
        raise ValueError(
            f"{name} export supports the llama family (LLaMA, Mistral, SmolLM); this model is "
            f"{family!r}"
        )
    if config.rope_scaling:
        raise ValueError(
            f"{name} export of RoPE scaling (LLaMA-3.1 style) is not supported; use format='hf'"
        )


def llama_block_widths(block: Params, head_dim: int) -> tuple[int, int, int]:
    """Query heads, key/value heads and MLP width of a LLaMA block, read from its params."""
    attn = block["self_attn"]
    return (
        attn["q_proj"]["kernel"].shape[1] // head_dim,
        attn["k_proj"]["kernel"].shape[1] // head_dim,
        block["mlp"]["gate_proj"]["kernel"].shape[1],
    )
