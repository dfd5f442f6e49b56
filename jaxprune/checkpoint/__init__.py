"""Checkpoints: arrays, JSON documents and small files in one atomic, verified directory.

This package knows nothing about models (a model-level checkpoint — config, tokenizer, pruned
params — is :func:`jaxprune.models.loaders.save_pruned` on top of it)::

    from jaxprune import checkpoint

    checkpoint.save_checkpoint("out/", params, masks=masks, config={...}, compact=True)
    ckpt = checkpoint.load_checkpoint("out/")      # params, masks, config, recipe, report, files
    checkpoint.is_checkpoint("out/")               # True once the save has completed

Ctrl-C or SIGTERM during a save stops it at its next step and leaves nothing (``KeyboardInterrupt``
or :class:`Terminated` is raised); one arriving after the final rename leaves the whole checkpoint
and is raised as the save returns.
"""

from jaxprune.checkpoint._files import Terminated
from jaxprune.checkpoint._manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    is_checkpoint,
)
from jaxprune.checkpoint._store import EXTRA_DIR, Checkpoint, load_checkpoint, save_checkpoint

__all__ = [
    "EXTRA_DIR",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Checkpoint",
    "Terminated",
    "is_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]
