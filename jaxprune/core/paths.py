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

__all__ = ["Tree", "flat_leaves", "get_leaf", "leaf_paths", "select_paths", "set_leaves"]


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_paths(tree: Tree) -> list[str]:
    """Paths of every array leaf of ``tree``, in the pytree's flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return ["/".join(_key_name(k) for k in path) for path, _ in flat]


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
    return {"/".join(_key_name(k) for k in path): leaf for path, leaf in flat}
