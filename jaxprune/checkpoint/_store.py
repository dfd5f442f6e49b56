"""Saving and loading pruned models: Orbax arrays, JSON metadata, atomic, optionally compact.

A checkpoint is a directory::

    jaxprune_checkpoint.json   manifest, written last: format version, every leaf's path, shape,
                               dtype and storage, and the size and SHA-256 of every other file
    config.json                model config (``jaxprune.models.config_to_dict``)
    recipe.json, report.json   optional
    extra/<name>               small files kept alongside (e.g. ``tokenizer.json``)
    arrays/                    one Orbax PyTree checkpoint holding params and masks

Saving writes everything into a hidden sibling directory and renames it into place only once the
manifest is on disk, so a save that fails or is killed never leaves a half-written checkpoint at the
target path. A directory without a manifest is therefore never mistaken for a checkpoint.

In compact mode each masked leaf is stored as its bit-packed mask plus its kept values only, about
``(1 - sparsity) + 1 / (8 * itemsize)`` of the dense size (before Orbax's zstd compression); the
kept values of all leaves share one buffer per dtype and the masks one byte buffer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.checkpoint._compact import decode_leaves, encode_arrays, expected_arrays
from jaxprune.checkpoint._files import (
    Interrupts,
    check_extra_files,
    file_records,
    fsync_dir,
    interrupts_deferred,
    remove_tree,
    scratch_dir,
    sweep_abandoned,
    write_file,
)
from jaxprune.checkpoint._manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    check_file,
    check_target,
    read_manifest,
)
from jaxprune.checkpoint._together import save_together
from jaxprune.checkpoint._trees import Key, KeyPath, flatten, nest, show

_ARRAYS_DIR = "arrays"
EXTRA_DIR = "extra"
_JSON_FILES = ("config", "recipe", "report")
_CHUNK_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` gives back.

    Attributes:
      params: nested dict of ``jax.Array`` with the saved structure, keys (``int`` included) and
        dtypes.
      masks: ``None`` if none were saved, else the params' structure with a boolean array where a
        leaf was masked and ``None`` elsewhere.
      config: the model config dict.
      recipe: the recipe dict, or ``None``.
      report: the report dict, or ``None``.
      extra_files: file name -> content.
      path: the checkpoint directory.
    """

    params: dict[Key, Any]
    masks: dict[Key, Any] | None
    config: dict[str, Any]
    recipe: dict[str, Any] | None
    report: dict[str, Any] | None
    extra_files: dict[str, bytes]
    path: str


def save_checkpoint(
    directory: str | os.PathLike,
    params: Mapping[Key, Any],
    *,
    masks: Mapping[Key, Any] | None = None,
    config: dict[str, Any],
    recipe: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
    compact: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Saves params (and masks, config, recipe, report, small files) as one checkpoint directory.

    The write is atomic: on any failure nothing is left at ``directory`` (with ``overwrite``, the
    previous checkpoint stays untouched) and no temporary directory remains. Ctrl-C (SIGINT) or
    SIGTERM during the save stops it at its next step, leaves nothing and raises
    ``KeyboardInterrupt`` (or ``Terminated``); one that arrives after the final rename leaves the
    complete checkpoint and is raised when the save returns, so the program stops either way.

    Args:
      directory: the checkpoint directory to create.
      params: nested dict (``str`` or ``int`` keys) of ``jax.Array``/``np.ndarray`` leaves.
      masks: ``None``, or the params' structure with a boolean keep-mask of the leaf's shape where
        the leaf is pruned and ``None`` (or no entry) elsewhere.
      config: model config dict, e.g. ``jaxprune.models.config_to_dict(cfg)``; JSON-serialisable
        (JSON turns tuples into lists).
      recipe: optional recipe dict (JSON).
      report: optional report dict (JSON; NumPy scalars are stored as Python numbers).
      extra_files: file name -> bytes, e.g. ``{"tokenizer.json": ...}``; plain names, no folders.
      compact: store each masked leaf as a bit-packed mask plus its kept values. Requires the params
        to be zero wherever their mask is ``False`` (apply the masks first); the restored zeros are
        ``+0.0``.
      overwrite: replace an existing checkpoint at ``directory`` instead of raising.

    In a multi-process run every process calls this with the same arguments: each writes the
    shards its devices hold and process 0 the rest (``compact`` is refused there).

    Returns:
      ``{"path": str, "bytes_on_disk": int (all files), "dense_bytes": int (raw bytes of the dense
      params), "compact": bool}``.
    """
    target = Path(directory).absolute()
    if compact and jax.process_count() > 1:
        raise ValueError(
            "compact storage needs each pruned leaf whole in one process; save a multi-process "
            "run with compact=False (one process can load it and save it compact)"
        )
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict (e.g. config_to_dict(cfg)), got {type(config)}")
    with interrupts_deferred() as interrupts:
        leaves, empty = flatten(params, "params")
        mask_leaves = _check_masks(leaves, masks)
        records, arrays = encode_arrays(leaves, mask_leaves, compact)
        documents = {"config": config, "recipe": recipe, "report": report}
        texts = {name: _to_json(doc, name) for name, doc in documents.items() if doc is not None}
        extra = check_extra_files(extra_files or {})
        check_target(target, overwrite)
        interrupts.check()

        if jax.process_count() > 1:
            documents = {f"{name}.json": text.encode() for name, text in texts.items()}
            documents.update({f"{EXTRA_DIR}/{name}": data for name, data in extra.items()})
            manifest = _manifest(texts, extra, records, empty, compact, masks)
            save_together(target, documents, arrays, manifest, _save_arrays, overwrite)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            sweep_abandoned(target)
            _write_atomically(
                target,
                (texts, extra, arrays, records, empty),
                compact,
                masks,
                overwrite,
                interrupts,
            )
        fsync_dir(target.parent)

    return {
        "path": str(target),
        "bytes_on_disk": sum(f.stat().st_size for f in target.rglob("*") if f.is_file()),
        "dense_bytes": sum(int(r["size"]) * jnp.dtype(r["dtype"]).itemsize for r in records),
        "compact": compact,
    }


def _write_atomically(
    target: Path,
    contents: tuple,
    compact: bool,
    masks: Any,
    overwrite: bool,
    interrupts: Interrupts,
) -> None:
    """Writes ``contents`` (texts, extra files, arrays, leaf records, empty dicts) into a scratch
    directory and renames it to ``target`` once complete.

    A recorded Ctrl-C or SIGTERM is acted on between the steps (``interrupts.check``). On any
    exception — errors, Ctrl-C, SIGTERM — the scratch directory is removed and a replaced
    checkpoint is put back; signals are only recorded meanwhile, so a second Ctrl-C cannot stop
    the cleanup.
    """
    texts, extra, arrays, records, empty = contents
    tmp = scratch_dir(target, "tmp")
    aside: Path | None = None
    try:
        for name, text in texts.items():
            write_file(tmp / f"{name}.json", text.encode())
            interrupts.check()
        for name, data in extra.items():
            write_file(tmp / EXTRA_DIR / name, data)
            interrupts.check()
        if arrays:
            _save_arrays(tmp / _ARRAYS_DIR, arrays)
            interrupts.check()
        manifest = {
            **_manifest(texts, extra, records, empty, compact, masks),
            "files": file_records(tmp),
        }
        write_file(tmp / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
        interrupts.check()  # the last moment to stop: after the rename the checkpoint is whole
        if overwrite and target.exists():
            aside = scratch_dir(target, "old")
            os.replace(target, aside / target.name)
        os.replace(tmp, target)
    except BaseException:
        remove_tree(tmp)
        if aside is not None and not target.exists() and (aside / target.name).exists():
            os.replace(aside / target.name, target)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        raise
    if aside is not None:
        # The new checkpoint is in place; failing to delete the old one must not fail the save.
        shutil.rmtree(aside, ignore_errors=True)


def _manifest(texts, extra, records, empty, compact, masks) -> dict[str, Any]:
    """The manifest's entries but the file records."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "compact": compact,
        "has_masks": masks is not None,
        "documents": sorted(texts),
        "extra_files": sorted(extra),
        "leaves": records,
        "empty_dicts": [[position, list(path)] for position, path in empty],
    }


def _check_masks(leaves: dict[KeyPath, Any], masks: Mapping[Key, Any] | None) -> dict[KeyPath, Any]:
    """The non-``None`` mask leaves by path, checked against the params."""
    if masks is None:
        return {}
    mask_leaves, _ = flatten(masks, "masks")
    out = {}
    for path, mask in mask_leaves.items():
        if mask is None:
            continue
        if path not in leaves:
            raise ValueError(f"masks has a leaf at {show(path)} where params has none")
        if not isinstance(mask, (np.ndarray, jax.Array)) or mask.dtype != np.bool_:
            raise ValueError(
                f"mask at {show(path)} must be a boolean array, got "
                f"{getattr(mask, 'dtype', type(mask).__name__)}; convert it with .astype(bool)"
            )
        if mask.shape != np.shape(leaves[path]):
            raise ValueError(
                f"mask at {show(path)} has shape {mask.shape} but the param has "
                f"{np.shape(leaves[path])}"
            )
        out[path] = mask
    return out


def _to_json(document: Any, name: str) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, (np.generic, jax.Array)) and np.ndim(obj) == 0:
            return np.asarray(obj).item()
        raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")

    try:
        return json.dumps(document, indent=1, default=default)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{name} must be JSON-serialisable (dicts, lists, str, numbers, bool, None): {e}"
        ) from e


def _save_arrays(path: Path, tree: dict[str, Any]) -> None:
    import orbax.checkpoint as ocp

    # Bounded chunks keep the shared compact buffers (which grow with the model) from becoming one
    # multi-gigabyte zarr chunk; smaller arrays are a single chunk either way.
    save_args = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=_CHUNK_BYTES), tree)
    # StandardCheckpointer saves in a background thread; wait_until_finished re-raises its errors,
    # so the arrays are complete on disk before the manifest is written. If the save fails, the
    # background writes are let finish before the caller removes the scratch directory: otherwise
    # they would recreate files in it after the removal.
    with ocp.StandardCheckpointer() as checkpointer:
        try:
            checkpointer.save(path, tree, save_args=save_args)
            checkpointer.wait_until_finished()
        except BaseException:
            with contextlib.suppress(Exception):
                checkpointer.wait_until_finished()
            raise


def load_checkpoint(directory: str | os.PathLike, *, verify: bool = True) -> Checkpoint:
    """Loads a checkpoint written by :func:`save_checkpoint`.

    Args:
      directory: the checkpoint directory.
      verify: check the SHA-256 of every file against the manifest (file sizes are always checked).

    Returns:
      A :class:`Checkpoint`; compact leaves are expanded back to dense arrays.

    Raises:
      FileNotFoundError: ``directory`` does not exist.
      ValueError: it is not a (complete) jaxprune checkpoint, was written by an unknown format
        version, or its files are missing, corrupted or disagree with the manifest.
    """
    root = Path(directory).absolute()
    manifest = read_manifest(root)
    for name, record in manifest["files"].items():
        check_file(root, name, record, verify)

    records = manifest["leaves"]
    params, masks = decode_leaves(root, records, _restore_arrays(root, records))
    params = {path: _to_jax(value) for path, value in params.items()}
    masks = {path: None if mask is None else _to_jax(mask) for path, mask in masks.items()}

    empty = [(position, tuple(path)) for position, path in manifest["empty_dicts"]]
    documents = {}
    for name in _JSON_FILES:
        if name in manifest["documents"]:
            documents[name] = json.loads((root / f"{name}.json").read_text())
    return Checkpoint(
        params=nest(params, empty),
        masks=nest(masks, empty) if manifest["has_masks"] else None,
        config=documents["config"],
        recipe=documents.get("recipe"),
        report=documents.get("report"),
        extra_files={n: (root / EXTRA_DIR / n).read_bytes() for n in manifest["extra_files"]},
        path=str(root),
    )


def _to_jax(value: np.ndarray) -> Any:
    # Without jax_enable_x64, JAX would silently narrow 64-bit arrays; keep those as NumPy so the
    # restored dtype is always the saved one.
    if jax.dtypes.canonicalize_dtype(value.dtype) != value.dtype:
        return value
    return jnp.asarray(value)


def _restore_arrays(root: Path, records: list[dict[str, Any]]) -> dict[tuple[str, ...], np.ndarray]:
    """The stored arrays by Orbax path, as NumPy arrays, checked against the manifest."""
    import orbax.checkpoint as ocp

    expected = expected_arrays(records)
    if not expected:
        return {}
    arrays_dir = root / _ARRAYS_DIR
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            stored = checkpointer.metadata(arrays_dir).item_metadata.tree
    except Exception as e:
        raise ValueError(
            f"{root} is corrupted: Orbax cannot read the array metadata in {arrays_dir} ({e}); "
            "save the checkpoint again"
        ) from e
    for orbax_path, (shape, dtype) in expected.items():
        meta = stored
        for key in orbax_path:
            meta = meta.get(key) if isinstance(meta, Mapping) else None
        where = "/".join(orbax_path)
        if meta is None or not hasattr(meta, "shape"):
            raise ValueError(
                f"{root} is corrupted: {where} is listed in its manifest but not stored"
            )
        if tuple(meta.shape) != shape or np.dtype(meta.dtype).name != dtype:
            raise ValueError(
                f"{root} is inconsistent: {where} is stored as {tuple(meta.shape)} "
                f"{np.dtype(meta.dtype).name} but the manifest says {shape} {dtype}; save the "
                "checkpoint again"
            )
    # NumPy targets make Orbax restore host arrays, which the compact decoding needs anyway.
    abstract = nest(
        {p: np.empty(shape, jnp.dtype(dtype)) for p, (shape, dtype) in expected.items()}
    )
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(arrays_dir, abstract)
    except Exception as e:
        raise ValueError(
            f"{root} is corrupted: Orbax failed to read {arrays_dir} ({e}); save the checkpoint "
            "again"
        ) from e
    out = {}
    for orbax_path in expected:
        node = restored
        for key in orbax_path:
            node = node[key]
        out[orbax_path] = np.asarray(node)
    return out
