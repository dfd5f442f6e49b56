"""Optional packages: import one, or fail with a message that says what to install."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, message: str, error: type[Exception] = RuntimeError) -> ModuleType:
    """Import ``module``; if it is not installed, raise ``error(message)``.

    Raises:
      RuntimeError: (or ``error``) the package is missing; ``message`` should name the
        ``pip install`` to run.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise error(message) from None
