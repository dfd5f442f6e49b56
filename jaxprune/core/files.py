"""Files: digests (the checkpoint store, the asset cache) and atomic writes (the exporters)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of the file at ``path``, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def new_target(path: str | os.PathLike, overwrite: bool, kind: str = "directory") -> Path:
    """``path`` made absolute, checked before any work: it must not exist unless ``overwrite``.

    Raises:
      ValueError: ``path`` exists and ``overwrite`` is false (``kind`` names what to choose).
    """
    target = Path(path).absolute()
    if target.exists() and not overwrite:
        raise ValueError(f"{target} exists; choose a new {kind} or pass overwrite=True")
    return target


@contextlib.contextmanager
def atomic_target(target: Path, *, directory: bool = True) -> Iterator[Path]:
    """A scratch directory (or file) beside ``target`` that replaces ``target`` when the block
    ends, and is removed if it raises: a failed write leaves nothing half-written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        if directory:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON with a final newline (the exporters' ``config.json`` style)."""
    path.write_text(json.dumps(data, indent=2) + "\n")


def written_directory(directory: Path, config: dict[str, Any], tensors: int) -> dict[str, Any]:
    """What a directory writer returns: ``{"path", "config", "tensors", "bytes"}`` (``bytes``: the
    total size of the files directly in ``directory``)."""
    size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
    return {"path": str(directory), "config": config, "tensors": tensors, "bytes": size}
