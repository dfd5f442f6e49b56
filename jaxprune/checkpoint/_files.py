"""Atomic file writing: fsynced files, directories removed for good, checksums."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Deletes ``path``, again if a writer thread that was still finishing recreated part of it."""
    for delay in (0.0, 0.05, 0.2, 1.0):
        time.sleep(delay)
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return


def file_records(root: Path) -> dict[str, dict[str, Any]]:
    return {
        f.relative_to(root).as_posix(): {"size": f.stat().st_size, "sha256": sha256(f)}
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_extra_files(extra_files: Mapping[str, bytes]) -> dict[str, bytes]:
    for name, data in extra_files.items():
        if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name:
            raise ValueError(f"extra file name {name!r} must be a plain file name without folders")
        if "\\" in name:
            raise ValueError(f"extra file name {name!r} must not contain a backslash")
        if not isinstance(data, (bytes, bytearray)):
            raise ValueError(f"extra file {name!r} must be bytes, got {type(data).__name__}")
    return {name: bytes(data) for name, data in extra_files.items()}
