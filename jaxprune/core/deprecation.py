"""Renamed public names: the old name still resolves, with a ``DeprecationWarning``."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def renamed(module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving each old name in ``names`` to its new one.

    Args:
      module: the module's ``__name__``.
      names: ``{old: new}``; ``new`` is an attribute of ``module``, or ``"package.module:attr"``
        (``"package.module"`` alone for a renamed module).

    Returns:
      The function to assign to the module's ``__getattr__``; other names raise
      ``AttributeError`` as usual.
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target = names[name]
        if ":" in target:
            where, attr = target.split(":")
        elif "." in target:
            where, attr = target, ""
        else:
            where, attr = module, target
        new = f"{where}.{attr}" if attr else where
        warnings.warn(f"{module}.{name} is deprecated; use {new}", DeprecationWarning, stacklevel=2)
        value = importlib.import_module(where)
        return getattr(value, attr) if attr else value

    return __getattr__
