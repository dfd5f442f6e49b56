"""Nested dicts of arrays as flat ``{key path: leaf}`` maps, and key paths as Orbax names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxprune.core import paths

Key = str | int
KeyPath = tuple[Key, ...]

# Characters kept verbatim in Orbax key names. Orbax joins a leaf's keys with "." into one name and
# tensorstore treats "/" as a path separator, so every other character is percent-escaped; this
# keeps distinct paths distinct (``{"a.b": x}`` vs ``{"a": {"b": y}}``).
KEY_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def flatten(tree: Any, what: str) -> tuple[dict[KeyPath, Any], list[tuple[int, KeyPath]]]:
    """Leaves of a nested dict by key path, in insertion order, and its empty sub-dicts.

    An empty sub-dict is given as ``(number of leaves before it, path)`` so that :func:`nest` can
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
                name = encode_key(key, what, path)
                if name in encoded:
                    raise ValueError(
                        f"{what} at {show(path)} has keys {encoded[name]!r} and {key!r}, which a "
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


def encode_key(key: Any, what: str, path: KeyPath) -> str:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise ValueError(
            f"{what} at {show(path)} has key {key!r} of type {type(key).__name__}; checkpoint "
            "keys must be str or int"
        )
    if isinstance(key, int):
        return str(key)
    if not key:
        raise ValueError(f"{what} at {show(path)} has an empty string key; give it a name")
    return "".join(c if c in KEY_SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in key)


def nest(flat: Mapping[KeyPath, Any], empty: list[tuple[int, KeyPath]] = ()) -> dict[Key, Any]:
    """Inverse of :func:`flatten`."""
    items = list(flat.items())
    for position, path in reversed(empty):
        items.insert(position, (path, {}))
    return paths.nest(dict(items))


def show(path: KeyPath) -> str:
    return paths.path_name(path) or "<root>"


def orbax_path(group: str, path: KeyPath) -> tuple[str, ...]:
    return (group, *(encode_key(k, group, ()) for k in path))
