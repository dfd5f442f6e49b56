"""The manifest, written last: what makes a directory a (complete) jaxprune checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jaxprune.core.files import sha256_file

MANIFEST_NAME = "jaxprune_checkpoint.json"
FORMAT_NAME = "jaxprune-checkpoint"
FORMAT_VERSION = 1

MANIFEST_FIELDS = frozenset(
    {"compact", "has_masks", "documents", "extra_files", "leaves", "empty_dicts", "files"}
)


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding a jaxprune checkpoint manifest.

    A save that did not finish leaves no manifest, so such a directory is not a checkpoint.
    """
    path = Path(path)
    return path.is_dir() and (path / MANIFEST_NAME).is_file()


def read_manifest(root: Path) -> dict[str, Any]:
    if not root.exists():
        raise FileNotFoundError(f"no checkpoint at {root}: the path does not exist")
    if not root.is_dir():
        raise ValueError(f"{root} is a file; a jaxprune checkpoint is a directory")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ValueError(
            f"{root} has no {MANIFEST_NAME}: it is not a jaxprune checkpoint, or a save into it "
            "did not finish; save the checkpoint again"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{manifest_path} is not valid JSON ({e}); save the checkpoint again"
        ) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{manifest_path} is not a jaxprune checkpoint manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{root} uses checkpoint format version {version!r}, this jaxprune reads version "
            f"{FORMAT_VERSION}; load it with the jaxprune version that wrote it"
        )
    missing = sorted(MANIFEST_FIELDS - set(manifest))
    if missing or "config" not in manifest["documents"]:
        raise ValueError(
            f"{manifest_path} is incomplete (missing {missing or ['config']}); save the "
            "checkpoint again"
        )
    return manifest


def check_file(root: Path, name: str, record: dict[str, Any], verify: bool) -> None:
    path = root / name
    if not path.is_file():
        raise ValueError(
            f"{root} is corrupted: {name} listed in its manifest is missing; save the checkpoint "
            "again"
        )
    size = path.stat().st_size
    if size != record["size"]:
        raise ValueError(
            f"{root} is corrupted: {name} has {size} bytes, the manifest says {record['size']}; "
            "save the checkpoint again"
        )
    if verify and sha256_file(path) != record["sha256"]:
        raise ValueError(
            f"{root} is corrupted: {name} does not match its checksum in the manifest; save the "
            "checkpoint again (or load with verify=False at your own risk)"
        )


def check_target(target: Path, overwrite: bool) -> None:
    if not target.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    # Refuse to delete something that is not ours: overwrite is for replacing checkpoints.
    if not target.is_dir() or not ((target / MANIFEST_NAME).is_file() or not any(target.iterdir())):
        raise ValueError(
            f"{target} exists and is not a jaxprune checkpoint (no {MANIFEST_NAME}); refusing to "
            "overwrite it, remove it yourself or choose another path"
        )
