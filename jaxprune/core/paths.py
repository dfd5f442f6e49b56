"""Pytree paths: every leaf of nested params has a ``/``-joined name, selected by regex.

``"layers/3/mlp/up_proj/kernel"`` names the same leaf in a nested dict (``params["layers"][3]...``,
block indices as ``int`` keys), an ``nnx.State`` and a flattened mapping. Selection regexes must
match a whole path, and a target pattern that matches nothing is an error, never a silent no-op.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax

Tree = Any

__all__ = [
    "Tree",
    "flat_leaves",
    "get_leaf",
    "leaf_name",
    "leaf_paths",
    "named_leaves",
    "nest",
    "path_name",
    "select_paths",
    "set_leaves",
]


def path_name(keys: Sequence[Any]) -> str:
    """``"layers/3/mlp"``: a JAX key path (or plain ``str``/``int`` keys) joined by ``/``."""
    return jax.tree_util.keystr(tuple(keys), simple=True, separator="/")


def leaf_name(path: str) -> str:
    """``path`` without ``nnx.State``'s trailing ``/value`` (both name the same leaf)."""
    return path[: -len("/value")] if path.endswith("/value") else path


def leaf_paths(tree: Tree) -> list[str]:
    """Paths of every array leaf of ``tree``, in the pytree's flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [path_name(path) for path, _ in flat]


def _child_key(node: Mapping, part: str, path: str) -> Any:
    if part in node:
        return part
    if part.lstrip("-").isdigit() and int(part) in node:
        return int(part)  # params["layers"] is keyed by int block index
    raise KeyError(f"no leaf {path!r}: {part!r} is not among {sorted(map(str, node))[:10]}")


def get_leaf(tree: Tree, path: str) -> Any:
    """The leaf of nested mappings ``tree`` at ``path``; ``KeyError`` naming the missing part."""
    node = tree
    for part in path.split("/"):
        if not isinstance(node, Mapping):
            raise KeyError(f"no leaf {path!r}: {part!r} is below a leaf")
        node = node[_child_key(node, part, path)]
    return node


def set_leaves(tree: Tree, leaves: Mapping[str, Any]) -> Tree:
    """A copy of ``tree`` with the leaves at the given paths replaced; ``tree`` is not modified.

    Only the dicts along the replaced paths are copied; every other leaf is shared.
    """
    if not leaves:
        return tree
    by_head: dict[Any, dict[str, Any]] = {}
    for path, leaf in leaves.items():
        head, _, rest = path.partition("/")
        if not isinstance(tree, Mapping):
            raise KeyError(f"cannot set {path!r}: the tree has a leaf where a mapping is expected")
        key = _child_key(tree, head, path)
        by_head.setdefault(key, {})[rest] = leaf
    out = dict(tree)
    for key, sub in by_head.items():
        if "" in sub:
            if len(sub) > 1:
                raise KeyError(f"cannot set both {key!r} and leaves below it")
            out[key] = sub[""]
        else:
            out[key] = set_leaves(tree[key], sub)
    return out


def select_paths(
    tree: Tree, targets: str | Sequence[str], ignore: str | Sequence[str] = ()
) -> list[str]:
    """Paths of array leaves matching any ``targets`` regex and no ``ignore`` regex.

    Regexes must match the whole path (``re.fullmatch``).

    Raises:
      ValueError: a regex does not compile, or a ``targets`` regex matches no leaf (almost always
        a typo that would otherwise prune nothing silently).
    """
    targets = [targets] if isinstance(targets, str) else list(targets)
    ignore = [ignore] if isinstance(ignore, str) else list(ignore)
    if not targets:
        raise ValueError("no target patterns given; pass at least one path regex")
    compiled = []
    for pattern in [*targets, *ignore]:
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise ValueError(f"invalid path regex {pattern!r}: {err}") from None
    target_res, ignore_res = compiled[: len(targets)], compiled[len(targets) :]
    paths = leaf_paths(tree)
    for pattern, regex in zip(targets, target_res, strict=True):
        if not any(regex.fullmatch(p) for p in paths):
            raise ValueError(
                f"target pattern {pattern!r} matches no parameter; paths look like "
                f"{paths[:3]} (patterns must match a whole path)"
            )
    return [
        p
        for p in paths
        if any(r.fullmatch(p) for r in target_res) and not any(r.fullmatch(p) for r in ignore_res)
    ]


def flat_leaves(tree: Tree) -> dict[str, Any]:
    """``{path: leaf}`` of every leaf of ``tree`` (``None`` leaves skipped), in flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_name(path): leaf for path, leaf in flat}


def named_leaves(tree: Tree) -> dict[str, Any]:
    """:func:`flat_leaves` named by :func:`leaf_name`: nested dicts and ``nnx.State`` alike."""
    return {leaf_name(p): leaf for p, leaf in flat_leaves(tree).items()}


def nest(flat: Mapping[str | tuple, Any]) -> dict:
    """Nested dicts from ``{path: leaf}``; the inverse of :func:`flat_leaves` on nested dicts.

    A path is a ``/``-joined string (all-digit parts become ``int`` keys, as block indices are)
    or a tuple of keys, used as they are.
    """
    out: dict = {}
    for path, value in flat.items():
        keys = path if isinstance(path, tuple) else [_parse_key(p) for p in path.split("/")]
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return out


def _parse_key(part: str) -> str | int:
    return int(part) if part.isdigit() else part
