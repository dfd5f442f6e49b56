"""One checkpoint written by every process of a multi-process run.

Each process writes the shards of the arrays its devices hold (Orbax's multi-host save); process
0 alone writes the JSON documents, the extra files and the manifest, and renames the finished
directory into place, so the save stays atomic and verified like a single-process one. The target
must be on storage every process sees (a shared file system), as Orbax's multi-host save needs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxprune.checkpoint._files import (
    file_records,
    fsync_dir,
    remove_tree,
    scratch_dir,
    sweep_abandoned,
    write_file,
)
from jaxprune.checkpoint._manifest import MANIFEST_NAME

_NAME_BYTES = 1024


def _sync(name: str) -> None:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(f"jaxprune checkpoint: {name}")


def _shared_scratch(target: Path) -> Path:
    """Process 0's new scratch directory, its path sent to every process."""
    from jax.experimental import multihost_utils

    name = np.zeros(_NAME_BYTES, np.uint8)
    if jax.process_index() == 0:
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_abandoned(target)
        encoded = os.fsencode(scratch_dir(target, "tmp"))
        if len(encoded) > _NAME_BYTES:
            raise ValueError(f"checkpoint path {target} is longer than {_NAME_BYTES - 100} bytes")
        name[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    name = np.asarray(multihost_utils.broadcast_one_to_all(name))
    return Path(os.fsdecode(name[name != 0].tobytes()))


def save_together(
    target: Path,
    documents: dict[str, bytes],
    arrays: dict[str, Any],
    manifest: dict[str, Any],
    save_arrays: Callable[[Path, dict[str, Any]], None],
    overwrite: bool,
) -> None:
    """Writes the checkpoint at ``target`` from every process (each must call this).

    Args:
      target: the checkpoint directory (the same path in every process).
      documents: relative file name -> bytes, written by process 0 (JSON documents, extra files).
      arrays: the Orbax tree of (global) arrays; every process writes the shards it holds.
      manifest: the manifest without its ``files`` entry, which process 0 adds once all files
        are written.
      save_arrays: the single-process Orbax save, called by every process.
      overwrite: replace an existing checkpoint at ``target``.
    """
    primary = jax.process_index() == 0
    tmp = _shared_scratch(target)
    try:
        if primary:
            for name, data in documents.items():
                write_file(tmp / name, data)
        if arrays:
            save_arrays(tmp / "arrays", arrays)
        _sync("arrays written")
        if primary:
            manifest = {**manifest, "files": file_records(tmp)}
            write_file(tmp / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
            if overwrite and target.exists():
                aside = scratch_dir(target, "old")
                os.replace(target, aside / target.name)
                os.replace(tmp, target)
                remove_tree(aside)
            else:
                os.replace(tmp, target)
            fsync_dir(target.parent)
        _sync("checkpoint in place")
    except BaseException:
        if primary:
            remove_tree(tmp)
        raise
