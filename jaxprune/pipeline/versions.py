"""The versions of the packages that decide a prune's numbers, recorded with every result.

A prune is reproducible bit for bit only with the same versions of these (and the same CPU
instruction set): a new XLA may fuse or vectorise a sum differently. ``constraints.txt`` at the
repository's root pins the versions that produced the README's numbers.
"""

from __future__ import annotations

import importlib.metadata

# jaxlib holds XLA (the numerics); jax and flax trace the programs; numpy, tokenizers and
# safetensors/gguf read the data and weights.
PACKAGES = (
    "jaxprune",
    "jax",
    "jaxlib",
    "flax",
    "numpy",
    "optax",
    "orbax-checkpoint",
    "tokenizers",
    "safetensors",
    "gguf",
)


def package_versions() -> dict[str, str | None]:
    """``{distribution: version}`` of :data:`PACKAGES` (``None`` for one not installed)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


__all__ = ["PACKAGES", "package_versions"]
