"""Hugging Face checkpoints (``config.json`` + safetensors) as jaxprune params.

This module is generic: the model family registered for the checkpoint's ``model_type``
(``Family.hf``) converts the config and the tensors (Hugging Face stores a linear layer's weight as
``(out, in)``; Flax kernels are ``(in, out)``). Tensors are read one at a time from memory-mapped
files, so a sharded checkpoint never sits in memory twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.models.base import LanguageModel, family_for_model_type
from jaxprune.models.loaders.pretrained import Pretrained
from jaxprune.models.tokenizer import Tokenizer

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


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
        with jax.default_device(jax.local_devices(backend="cpu")[0]):
            with safe_open(self._files[name], framework="flax") as f:
                return np.asarray(f.get_tensor(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def load_hf_checkpoint(directory: str | os.PathLike, dtype: Any = jnp.float32) -> Pretrained:
    """Loads a Hugging Face causal-LM directory (``config.json`` + safetensors weights).

    The family is the one registered for the config's ``model_type``
    (:func:`jaxprune.models.family_for_model_type`); it converts the config and the tensors.

    Args:
      directory: a directory written by ``save_pretrained`` (single-file or sharded safetensors).
        Its tokenizer, if any, is loaded too.
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
    try:
        family = family_for_model_type(hf_config.get("model_type"))
    except ValueError as err:
        raise ValueError(f"{config_path}: {err}") from None
    tensors = SafetensorsCheckpoint(directory)
    config = family.hf.config_from_hf(hf_config)
    params = family.hf.params_from_hf(tensors, config, dtype)
    return Pretrained(
        model=LanguageModel(config, dtype=dtype),
        params=params,
        tokenizer=Tokenizer.from_directory(directory)
        if Tokenizer.in_directory(directory)
        else None,
        source=str(directory),
    )
