"""Compact storage: each masked leaf as its bit-packed mask plus its kept values only.

The kept values of all compact leaves share one buffer per dtype and the masks one byte buffer, so
a pruned model is a handful of Orbax arrays instead of two per matrix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.checkpoint._trees import KeyPath, nest, orbax_path, show


def compact_layout(
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


def encode_arrays(
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
                f"params leaf at {show(path)} is a {type(leaf).__name__}, not an array; wrap it "
                "with np.asarray"
            )
        if not (jnp.issubdtype(leaf.dtype, jnp.number) or jnp.issubdtype(leaf.dtype, jnp.bool_)):
            raise ValueError(
                f"params leaf at {show(path)} has dtype {leaf.dtype}; checkpoints store numeric "
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

    totals, nbits, slots = compact_layout(records)
    kept_values = {dtype: np.empty(n, jnp.dtype(dtype)) for dtype, n in totals.items() if n}
    mask_bits = np.empty(nbits, np.uint8)
    flat: dict[tuple[str, ...], Any] = {}
    for (path, leaf), record, slot in zip(leaves.items(), records, slots, strict=True):
        if slot is None:
            if leaf.size:
                flat[orbax_path("params", path)] = leaf
                if record["masked"]:
                    flat[orbax_path("masks", path)] = masks[path]
            continue
        values, keep = np.asarray(leaf), np.asarray(masks[path])
        dropped = np.count_nonzero(values[~keep] != 0)
        if dropped:
            raise ValueError(
                f"params at {show(path)} hold {dropped} nonzero values where the mask is False, "
                "which compact storage would drop; apply the masks first or save with compact=False"
            )
        start, bits_start = slot
        kept_values[record["dtype"]][start : start + record["kept"]] = values[keep]
        mask_bits[bits_start : bits_start + (leaf.size + 7) // 8] = np.packbits(keep.reshape(-1))
    for dtype, buffer in kept_values.items():
        flat["kept_values", dtype] = buffer
    if nbits:
        flat["mask_bits",] = mask_bits
    return records, nest(flat)


def expected_arrays(records: list[dict[str, Any]]) -> dict[tuple[str, ...], tuple[tuple, str]]:
    """Orbax path -> (shape, dtype) of every array the manifest says is stored."""
    totals, nbits, slots = compact_layout(records)
    expected: dict[tuple[str, ...], tuple[tuple, str]] = {}
    for r, slot in zip(records, slots, strict=True):
        path = tuple(r["path"])
        if slot is None and r["size"]:
            expected[orbax_path("params", path)] = (tuple(r["shape"]), r["dtype"])
            if r["masked"]:
                expected[orbax_path("masks", path)] = (tuple(r["shape"]), "bool")
    for dtype, n in totals.items():
        if n:
            expected["kept_values", dtype] = ((n,), dtype)
    if nbits:
        expected["mask_bits",] = ((nbits,), "uint8")
    return expected


def decode_leaves(
    root: Path, records: list[dict[str, Any]], arrays: dict[tuple[str, ...], np.ndarray]
) -> tuple[dict[KeyPath, np.ndarray], dict[KeyPath, np.ndarray | None]]:
    """Dense params and masks by leaf path, compact leaves expanded."""
    _, _, slots = compact_layout(records)
    params, masks = {}, {}
    for r, slot in zip(records, slots, strict=True):
        path, shape, dtype = tuple(r["path"]), tuple(r["shape"]), jnp.dtype(r["dtype"])
        if slot is None:
            # Zero-size leaves were not stored (Orbax refuses them).
            params[path] = arrays.get(orbax_path("params", path))
            if params[path] is None:
                params[path] = np.zeros(shape, dtype)
            masks[path] = None
            if r["masked"]:
                masks[path] = arrays.get(orbax_path("masks", path), np.zeros(shape, bool))
            continue
        start, bits_start = slot
        bits = arrays.get(("mask_bits",), np.zeros(0, np.uint8))
        keep = np.unpackbits(bits[bits_start : bits_start + (r["size"] + 7) // 8], count=r["size"])
        keep = keep.astype(bool).reshape(shape)
        if int(keep.sum()) != r["kept"]:
            raise ValueError(
                f"{root} is corrupted: the packed mask of {show(path)} keeps {int(keep.sum())} "
                f"values, the manifest says {r['kept']}; save the checkpoint again"
            )
        dense = np.zeros(shape, dtype)
        kept = arrays.get(("kept_values", r["dtype"]), np.zeros(0, dtype))
        dense[keep] = kept[start : start + r["kept"]]
        params[path], masks[path] = dense, keep
    return params, masks
