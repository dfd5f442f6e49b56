"""Pruned models as checkpoints: params (and masks) with the config and tokenizer they need.

A directory written by :func:`save_pruned` is a model of its own: ``load_pretrained(directory)``,
:func:`load_pruned` and ``jaxprune eval --model directory`` read it back, tokenizer included. The
storage itself (atomic, verified, optionally compact) is :mod:`jaxprune.checkpoint`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune.checkpoint import EXTRA_DIR, load_checkpoint, save_checkpoint
from jaxprune.models.base import LanguageModel, config_from_dict, config_to_dict
from jaxprune.models.loaders.pretrained import Pretrained
from jaxprune.models.tokenizer import Tokenizer

Key = str | int


def save_pruned(
    directory: str | os.PathLike,
    pretrained: Pretrained,
    params: Mapping[Key, Any],
    *,
    masks: Mapping[Key, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    compact: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Saves pruned ``params`` of a loaded model with its config and tokenizer.

    The directory is then a model of its own: ``load_pretrained(directory)`` and
    ``jaxprune eval --model directory`` read it back, tokenizer included.

    Args:
      directory: the checkpoint directory to create.
      pretrained: the :class:`jaxprune.models.loaders.Pretrained` the params were pruned from.
      params, masks, recipe, report, compact, overwrite: as in
        :func:`jaxprune.checkpoint.save_checkpoint`.

    Returns:
      :func:`jaxprune.checkpoint.save_checkpoint`'s summary.
    """
    extra: dict[str, bytes] = {}
    if pretrained.tokenizer is not None:
        with tempfile.TemporaryDirectory() as tmp:
            pretrained.tokenizer.save(tmp)
            extra = {f.name: f.read_bytes() for f in Path(tmp).iterdir() if f.is_file()}
    return save_checkpoint(
        directory,
        params,
        masks=masks,
        config=config_to_dict(pretrained.model.config),
        recipe=recipe,
        report=report,
        extra_files=extra,
        compact=compact,
        overwrite=overwrite,
    )


def load_pruned(directory: str | os.PathLike, *, verify: bool = True) -> Pretrained:
    """Loads a checkpoint as a ready-to-run model, its params and (if saved) its tokenizer.

    Args:
      directory: a checkpoint saved with a model ``config`` (``config_to_dict``) and, optionally,
        ``extra_files={"tokenizer.json": ...}``.
      verify: as in :func:`jaxprune.checkpoint.load_checkpoint`.

    Returns:
      ``jaxprune.models.loaders.Pretrained`` whose ``tokenizer`` is ``None`` when none was saved.
      The params keep their saved dtype, and the model computes in it when all floating params
      share one (float32 otherwise). The masks are in
      :func:`jaxprune.checkpoint.load_checkpoint`'s result.
    """
    checkpoint = load_checkpoint(directory, verify=verify)
    try:
        config = config_from_dict(checkpoint.config)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{checkpoint.path} holds no usable model config ({e}); save it with "
            "config=jaxprune.models.config_to_dict(cfg)"
        ) from e
    tokenizer = None
    if "tokenizer.json" in checkpoint.extra_files:
        tokenizer = Tokenizer.from_directory(Path(checkpoint.path) / EXTRA_DIR)
    floating = {
        leaf.dtype
        for leaf in jax.tree.leaves(checkpoint.params)
        if jnp.issubdtype(leaf.dtype, jnp.floating)
    }
    dtype = floating.pop() if len(floating) == 1 else jnp.float32
    return Pretrained(
        model=LanguageModel(config, dtype=dtype),
        params=checkpoint.params,
        tokenizer=tokenizer,
        source=checkpoint.path,
    )
