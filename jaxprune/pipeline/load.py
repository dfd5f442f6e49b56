"""Loading a model for a job (by slices onto a mesh, with the tokenizer text data needs) and its
evaluation windows."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune.data import load_windows
from jaxprune.models.loaders import Pretrained, check_source, load_pretrained
from jaxprune.models.loaders.sliced import load_sliced


def load_model(
    model: str | os.PathLike, dtype: Any = None, mesh: jax.sharding.Mesh | None = None
) -> Pretrained:
    """:func:`load_pretrained`; with ``mesh``, a Hugging Face directory is read by slices straight
    onto the mesh (each process reads only what its devices hold,
    :func:`~jaxprune.models.loaders.sliced.load_sliced`)."""
    if mesh is not None and check_source(model) == "hf":
        return load_sliced(model, mesh, jnp.float32 if dtype is None else dtype)
    return load_pretrained(model, dtype)


def load_with_tokenizer(
    model: str | os.PathLike, dtype: Any = None, mesh: jax.sharding.Mesh | None = None
) -> Pretrained:
    """:func:`load_model`, refusing a model without a tokenizer (text cannot be encoded)."""
    pretrained = load_model(model, dtype, mesh)
    if pretrained.tokenizer is None:
        raise ValueError(f"{model!r} carries no tokenizer, so text data cannot be encoded")
    return pretrained


def load_eval_windows(
    pretrained: Pretrained,
    source: str | os.PathLike,
    nsamples: int,
    seqlen: int,
    bos_id: int | None,
) -> Any:
    """``nsamples`` consecutive evaluation windows of ``source`` in ``pretrained``'s tokens, each
    starting with ``bos_id`` unless it is ``None`` (:func:`jaxprune.data.load_windows`)."""
    return load_windows(
        source, pretrained.tokenizer, nsamples=nsamples, seqlen=seqlen, split="eval", bos=bos_id
    )


__all__ = ["load_eval_windows", "load_model", "load_with_tokenizer"]
