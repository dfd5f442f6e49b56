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

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from jaxprune.models.loaders import Pretrained

MANIFEST_NAME = "jaxprune_checkpoint.json"
FORMAT_NAME = "jaxprune-checkpoint"
FORMAT_VERSION = 1

_ARRAYS_DIR = "arrays"
_EXTRA_DIR = "extra"
_JSON_FILES = ("config", "recipe", "report")
_CHUNK_BYTES = 64 << 20
_MANIFEST_FIELDS = frozenset(
    {"compact", "has_masks", "documents", "extra_files", "leaves", "empty_dicts", "files"}
)
# Characters kept verbatim in Orbax key names. Orbax joins a leaf's keys with "." into one name and
# tensorstore treats "/" as a path separator, so every other character is percent-escaped; this
# keeps distinct paths distinct (``{"a.b": x}`` vs ``{"a": {"b": y}}``).
_KEY_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")

Key = str | int
KeyPath = tuple[Key, ...]


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


# --------------------------------------------------------------------------------------------------
# Trees


def _flatten(tree: Any, what: str) -> tuple[dict[KeyPath, Any], list[tuple[int, KeyPath]]]:
    """Leaves of a nested dict by key path, in insertion order, and its empty sub-dicts.

    An empty sub-dict is given as ``(number of leaves before it, path)`` so that :func:`_nest` can
    put it back in its place.
    """
    leaves: dict[KeyPath, Any] = {}
    empty: list[tuple[int, KeyPath]] = []

    def walk(node: Any, path: KeyPath) -> None:
        if isinstance(node, Mapping):
            if not node and path:
                empty.append((len(leaves), path))
            encoded: dict[str, Key] = {}
            for key, child in node.items():
                name = _encode_key(key, what, path)
                if name in encoded:
                    raise ValueError(
                        f"{what} at {_show(path)} has keys {encoded[name]!r} and {key!r}, which a "
                        "checkpoint cannot tell apart; rename one of them"
                    )
                encoded[name] = key
                walk(child, (*path, key))
        else:
            leaves[path] = node

    if not isinstance(tree, Mapping):
        raise ValueError(f"{what} must be a nested dict of arrays, got {type(tree).__name__}")
    walk(tree, ())
    return leaves, empty


def _encode_key(key: Any, what: str, path: KeyPath) -> str:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise ValueError(
            f"{what} at {_show(path)} has key {key!r} of type {type(key).__name__}; checkpoint "
            "keys must be str or int"
        )
    if isinstance(key, int):
        return str(key)
    if not key:
        raise ValueError(f"{what} at {_show(path)} has an empty string key; give it a name")
    return "".join(c if c in _KEY_SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in key)


def _nest(flat: Mapping[KeyPath, Any], empty: list[tuple[int, KeyPath]] = ()) -> dict[Key, Any]:
    """Inverse of :func:`_flatten`."""
    items = list(flat.items())
    for position, path in reversed(empty):
        items.insert(position, (path, {}))
    out: dict[Key, Any] = {}
    for path, value in items:
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def _show(path: KeyPath) -> str:
    return "/".join(str(k) for k in path) or "<root>"


# --------------------------------------------------------------------------------------------------
# Saving


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
    previous checkpoint stays untouched) and no temporary directory remains.

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

    Returns:
      ``{"path": str, "bytes_on_disk": int (all files), "dense_bytes": int (raw bytes of the dense
      params), "compact": bool}``.
    """
    target = Path(directory).absolute()
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict (e.g. config_to_dict(cfg)), got {type(config)}")
    leaves, empty = _flatten(params, "params")
    mask_leaves = _check_masks(leaves, masks)
    records, arrays = _encode_arrays(leaves, mask_leaves, compact)
    documents = {"config": config, "recipe": recipe, "report": report}
    texts = {name: _to_json(doc, name) for name, doc in documents.items() if doc is not None}
    extra = _check_extra_files(extra_files or {})
    _check_target(target, overwrite)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    aside: Path | None = None
    try:
        for name, text in texts.items():
            _write_file(tmp / f"{name}.json", text.encode())
        for name, data in extra.items():
            _write_file(tmp / _EXTRA_DIR / name, data)
        if arrays:
            _save_arrays(tmp / _ARRAYS_DIR, arrays)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "compact": compact,
            "has_masks": masks is not None,
            "documents": sorted(texts),
            "extra_files": sorted(extra),
            "leaves": records,
            "empty_dicts": [[position, list(path)] for position, path in empty],
            "files": _file_records(tmp),
        }
        _write_file(tmp / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
        if overwrite and target.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, aside / target.name)
        os.replace(tmp, target)
    except BaseException:
        _remove_tree(tmp)
        if aside is not None and not target.exists() and (aside / target.name).exists():
            os.replace(aside / target.name, target)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        raise
    if aside is not None:
        # The new checkpoint is in place; failing to delete the old one must not fail the save.
        shutil.rmtree(aside, ignore_errors=True)
    _fsync_dir(target.parent)

    return {
        "path": str(target),
        "bytes_on_disk": sum(f.stat().st_size for f in target.rglob("*") if f.is_file()),
        "dense_bytes": sum(int(r["size"]) * jnp.dtype(r["dtype"]).itemsize for r in records),
        "compact": compact,
    }


def _check_masks(leaves: dict[KeyPath, Any], masks: Mapping[Key, Any] | None) -> dict[KeyPath, Any]:
    """The non-``None`` mask leaves by path, checked against the params."""
    if masks is None:
        return {}
    mask_leaves, _ = _flatten(masks, "masks")
    out = {}
    for path, mask in mask_leaves.items():
        if mask is None:
            continue
        if path not in leaves:
            raise ValueError(f"masks has a leaf at {_show(path)} where params has none")
        if not isinstance(mask, (np.ndarray, jax.Array)) or mask.dtype != np.bool_:
            raise ValueError(
                f"mask at {_show(path)} must be a boolean array, got "
                f"{getattr(mask, 'dtype', type(mask).__name__)}; convert it with .astype(bool)"
            )
        if mask.shape != np.shape(leaves[path]):
            raise ValueError(
                f"mask at {_show(path)} has shape {mask.shape} but the param has "
                f"{np.shape(leaves[path])}"
            )
        out[path] = mask
    return out


def _compact_layout(
    records: list[dict[str, Any]],
) -> tuple[dict[str, int], int, list[tuple[int, int] | None]]:
    """Where the compact leaves live in the shared buffers.

    Compact leaves (records with ``"kept"``) are concatenated, in record order, into one kept-values
    buffer per dtype and one byte-aligned mask-bits buffer: a handful of Orbax arrays instead of
    two per pruned matrix, whose per-array metadata would outweigh the savings on small models.

    Returns:
      (values per dtype, total mask bytes, per record ``(values offset, bits offset)`` or ``None``).
    """
    values: dict[str, int] = {}
    bits = 0
    slots: list[tuple[int, int] | None] = []
    for r in records:
        if "kept" not in r:
            slots.append(None)
            continue
        slots.append((values.get(r["dtype"], 0), bits))
        values[r["dtype"]] = values.get(r["dtype"], 0) + r["kept"]
        bits += (r["size"] + 7) // 8
    return values, bits, slots


def _encode_arrays(
    leaves: dict[KeyPath, Any], masks: dict[KeyPath, Any], compact: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Manifest records of every leaf and the Orbax tree that stores them.

    Orbax refuses zero-size arrays, so those are not stored; the manifest's shapes are enough to
    rebuild them.
    """
    records = []
    for path, leaf in leaves.items():
        if not isinstance(leaf, (np.ndarray, jax.Array)):
            raise ValueError(
                f"params leaf at {_show(path)} is a {type(leaf).__name__}, not an array; wrap it "
                "with np.asarray"
            )
        if not (jnp.issubdtype(leaf.dtype, jnp.number) or jnp.issubdtype(leaf.dtype, jnp.bool_)):
            raise ValueError(
                f"params leaf at {_show(path)} has dtype {leaf.dtype}; checkpoints store numeric "
                "and boolean arrays only"
            )
        record = {
            "path": list(path),
            "shape": list(leaf.shape),
            "dtype": np.dtype(leaf.dtype).name,
            "size": int(leaf.size),
            "masked": path in masks,
        }
        if compact and path in masks:
            record["kept"] = int(np.count_nonzero(masks[path]))
        records.append(record)

    totals, nbits, slots = _compact_layout(records)
    kept_values = {dtype: np.empty(n, jnp.dtype(dtype)) for dtype, n in totals.items() if n}
    mask_bits = np.empty(nbits, np.uint8)
    flat: dict[tuple[str, ...], Any] = {}
    for (path, leaf), record, slot in zip(leaves.items(), records, slots, strict=True):
        if slot is None:
            if leaf.size:
                flat[_orbax_path("params", path)] = leaf
                if record["masked"]:
                    flat[_orbax_path("masks", path)] = masks[path]
            continue
        values, keep = np.asarray(leaf), np.asarray(masks[path])
        dropped = np.count_nonzero(values[~keep] != 0)
        if dropped:
            raise ValueError(
                f"params at {_show(path)} hold {dropped} nonzero values where the mask is False, "
                "which compact storage would drop; apply the masks first or save with compact=False"
            )
        start, bits_start = slot
        kept_values[record["dtype"]][start : start + record["kept"]] = values[keep]
        mask_bits[bits_start : bits_start + (leaf.size + 7) // 8] = np.packbits(keep.reshape(-1))
    for dtype, buffer in kept_values.items():
        flat["kept_values", dtype] = buffer
    if nbits:
        flat["mask_bits",] = mask_bits
    return records, _nest(flat)


def _orbax_path(group: str, path: KeyPath) -> tuple[str, ...]:
    return (group, *(_encode_key(k, group, ()) for k in path))


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


def _check_extra_files(extra_files: Mapping[str, bytes]) -> dict[str, bytes]:
    for name, data in extra_files.items():
        if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name:
            raise ValueError(f"extra file name {name!r} must be a plain file name without folders")
        if "\\" in name:
            raise ValueError(f"extra file name {name!r} must not contain a backslash")
        if not isinstance(data, (bytes, bytearray)):
            raise ValueError(f"extra file {name!r} must be bytes, got {type(data).__name__}")
    return {name: bytes(data) for name, data in extra_files.items()}


def _check_target(target: Path, overwrite: bool) -> None:
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


def _save_arrays(path: Path, tree: dict[str, Any]) -> None:
    import orbax.checkpoint as ocp

    # Bounded chunks keep the shared compact buffers (which grow with the model) from becoming one
    # multi-gigabyte zarr chunk; smaller arrays are a single chunk either way.
    save_args = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=_CHUNK_BYTES), tree)
    # StandardCheckpointer saves in a background thread; wait_until_finished re-raises its errors,
    # so the arrays are complete on disk before the manifest is written.
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, tree, save_args=save_args)
        checkpointer.wait_until_finished()


def _remove_tree(path: Path) -> None:
    """Deletes ``path``, again if a writer thread that was still finishing recreated part of it."""
    for delay in (0.0, 0.05, 0.2, 1.0):
        time.sleep(delay)
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_records(root: Path) -> dict[str, dict[str, Any]]:
    return {
        f.relative_to(root).as_posix(): {"size": f.stat().st_size, "sha256": _sha256(f)}
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Loading


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
    manifest = _read_manifest(root)
    for name, record in manifest["files"].items():
        _check_file(root, name, record, verify)

    records = manifest["leaves"]
    params, masks = _decode_leaves(root, records, _restore_arrays(root, records))
    params = {path: _to_jax(value) for path, value in params.items()}
    masks = {path: None if mask is None else _to_jax(mask) for path, mask in masks.items()}

    empty = [(position, tuple(path)) for position, path in manifest["empty_dicts"]]
    documents = {}
    for name in _JSON_FILES:
        if name in manifest["documents"]:
            documents[name] = json.loads((root / f"{name}.json").read_text())
    return Checkpoint(
        params=_nest(params, empty),
        masks=_nest(masks, empty) if manifest["has_masks"] else None,
        config=documents["config"],
        recipe=documents.get("recipe"),
        report=documents.get("report"),
        extra_files={n: (root / _EXTRA_DIR / n).read_bytes() for n in manifest["extra_files"]},
        path=str(root),
    )


def _to_jax(value: np.ndarray) -> Any:
    # Without jax_enable_x64, JAX would silently narrow 64-bit arrays; keep those as NumPy so the
    # restored dtype is always the saved one.
    if jax.dtypes.canonicalize_dtype(value.dtype) != value.dtype:
        return value
    return jnp.asarray(value)


def _read_manifest(root: Path) -> dict[str, Any]:
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
    missing = sorted(_MANIFEST_FIELDS - set(manifest))
    if missing or "config" not in manifest["documents"]:
        raise ValueError(
            f"{manifest_path} is incomplete (missing {missing or ['config']}); save the "
            "checkpoint again"
        )
    return manifest


def _check_file(root: Path, name: str, record: dict[str, Any], verify: bool) -> None:
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
    if verify and _sha256(path) != record["sha256"]:
        raise ValueError(
            f"{root} is corrupted: {name} does not match its checksum in the manifest; save the "
            "checkpoint again (or load with verify=False at your own risk)"
        )


def _expected_arrays(records: list[dict[str, Any]]) -> dict[tuple[str, ...], tuple[tuple, str]]:
    """Orbax path -> (shape, dtype) of every array the manifest says is stored."""
    totals, nbits, slots = _compact_layout(records)
    expected: dict[tuple[str, ...], tuple[tuple, str]] = {}
    for r, slot in zip(records, slots, strict=True):
        path = tuple(r["path"])
        if slot is None and r["size"]:
            expected[_orbax_path("params", path)] = (tuple(r["shape"]), r["dtype"])
            if r["masked"]:
                expected[_orbax_path("masks", path)] = (tuple(r["shape"]), "bool")
    for dtype, n in totals.items():
        if n:
            expected["kept_values", dtype] = ((n,), dtype)
    if nbits:
        expected["mask_bits",] = ((nbits,), "uint8")
    return expected


def _restore_arrays(root: Path, records: list[dict[str, Any]]) -> dict[tuple[str, ...], np.ndarray]:
    """The stored arrays by Orbax path, as NumPy arrays, checked against the manifest."""
    import orbax.checkpoint as ocp

    expected = _expected_arrays(records)
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
    abstract = _nest(
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


def _decode_leaves(
    root: Path, records: list[dict[str, Any]], arrays: dict[tuple[str, ...], np.ndarray]
) -> tuple[dict[KeyPath, np.ndarray], dict[KeyPath, np.ndarray | None]]:
    """Dense params and masks by leaf path, compact leaves expanded."""
    _, _, slots = _compact_layout(records)
    params, masks = {}, {}
    for r, slot in zip(records, slots, strict=True):
        path, shape, dtype = tuple(r["path"]), tuple(r["shape"]), jnp.dtype(r["dtype"])
        if slot is None:
            # Zero-size leaves were not stored (Orbax refuses them).
            params[path] = arrays.get(_orbax_path("params", path))
            if params[path] is None:
                params[path] = np.zeros(shape, dtype)
            masks[path] = None
            if r["masked"]:
                masks[path] = arrays.get(_orbax_path("masks", path), np.zeros(shape, bool))
            continue
        start, bits_start = slot
        bits = arrays.get(("mask_bits",), np.zeros(0, np.uint8))
        keep = np.unpackbits(bits[bits_start : bits_start + (r["size"] + 7) // 8], count=r["size"])
        keep = keep.astype(bool).reshape(shape)
        if int(keep.sum()) != r["kept"]:
            raise ValueError(
                f"{root} is corrupted: the packed mask of {_show(path)} keeps {int(keep.sum())} "
                f"values, the manifest says {r['kept']}; save the checkpoint again"
            )
        dense = np.zeros(shape, dtype)
        kept = arrays.get(("kept_values", r["dtype"]), np.zeros(0, dtype))
        dense[keep] = kept[start : start + r["kept"]]
        params[path], masks[path] = dense, keep
    return params, masks


def save_pruned(
    directory: str | os.PathLike,
    pretrained: Any,
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
      params, masks, recipe, report, compact, overwrite: as in :func:`save_checkpoint`.

    Returns:
      :func:`save_checkpoint`'s summary.
    """
    from jaxprune.models import config_to_dict

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


def load_model_checkpoint(directory: str | os.PathLike, *, verify: bool = True) -> Pretrained:
    """Loads a checkpoint as a ready-to-run model, its params and (if saved) its tokenizer.

    Args:
      directory: a checkpoint saved with a model ``config`` (``config_to_dict``) and, optionally,
        ``extra_files={"tokenizer.json": ...}``.
      verify: as in :func:`load_checkpoint`.

    Returns:
      ``jaxprune.models.loaders.Pretrained`` whose ``tokenizer`` is ``None`` when none was saved.
      The params keep their saved dtype, and the model computes in it when all floating params
      share one (float32 otherwise). The masks are in :func:`load_checkpoint`'s result.
    """
    from jaxprune.models import LanguageModel, config_from_dict
    from jaxprune.models.loaders import Pretrained

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
        from jaxprune.models.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_directory(Path(checkpoint.path) / _EXTRA_DIR)
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
