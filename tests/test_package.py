"""The package as a whole: every module imports, and one public class name means one class.

A stale module that no longer imports (the old ``jaxprune/masks.py`` did, for months) fails here,
and so does a second public class under a name another module already uses.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import defaultdict
from types import ModuleType

import jaxprune


def _module_names() -> list[str]:
    # ``__main__`` modules run the CLI when imported; they are one line around ``cli.main``.
    found = pkgutil.walk_packages(jaxprune.__path__, "jaxprune.")
    return sorted(m.name for m in found if not m.name.endswith("__main__"))


def _public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    return list(names) if names is not None else [n for n in vars(module) if not n[0] == "_"]


def test_every_module_imports():
    failed = {}
    for name in _module_names():
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - any failure is what this test reports
            failed[name] = f"{type(error).__name__}: {error}"
    assert not failed, failed


def test_no_two_public_classes_share_a_name():
    classes: dict[str, set[str]] = defaultdict(set)
    for name in _module_names():
        module = importlib.import_module(name)
        for public in _public_names(module):
            obj = getattr(module, public, None)
            if inspect.isclass(obj) and obj.__module__.startswith("jaxprune."):
                classes[public].add(f"{obj.__module__}.{obj.__qualname__}")
    shared = {name: sorted(where) for name, where in classes.items() if len(where) > 1}
    assert not shared, shared
