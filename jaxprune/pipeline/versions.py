"""The versions of the packages that decide a prune's numbers, recorded with every result.

A prune is reproducible bit for bit only with the same versions of these and the same LAPACK
kernels: a new XLA may fuse or vectorise a sum differently, and on CPU jaxlib takes its Cholesky
and triangular solves from scipy's bundled OpenBLAS, which picks its kernels for the CPU it runs
on (``SkylakeX`` on an AVX-512 CPU, ``Haswell`` on an AVX2 one, ``Zen`` on AMD Zen 1-3;
``OPENBLAS_CORETYPE`` overrides the choice). ``constraints.txt`` at the repository's root pins
the versions that produced the README's numbers.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
from pathlib import Path

# jaxlib holds XLA (the numerics); jax and flax trace the programs; numpy, tokenizers and
# safetensors/gguf read the data and weights.
PACKAGES = (
    "jaxprune",
    "jax",
    "jaxlib",
    "flax",
    "numpy",
    "scipy",
    "optax",
    "orbax-checkpoint",
    "tokenizers",
    "safetensors",
    "gguf",
)


def lapack_kernels() -> str | None:
    """The OpenBLAS build and kernel set behind jaxlib's CPU linear algebra, or ``None``.

    jaxlib calls LAPACK through ``scipy.linalg.cython_lapack``; a scipy wheel bundles OpenBLAS
    with every kernel set and picks one at load time. This reads that library's own report, e.g.
    ``"OpenBLAS 0.3.30 DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64"``. ``None`` where scipy
    is not a wheel with bundled OpenBLAS (conda, MKL builds): their kernels are not recorded.
    """
    try:
        import scipy
    except ImportError:
        return None
    libs = Path(scipy.__file__).resolve().parent.parent / "scipy.libs"
    for path in sorted(libs.glob("libscipy_openblas*")):
        try:
            library = ctypes.CDLL(str(path))
            report = library.scipy_openblas_get_config
        except (OSError, AttributeError):
            continue
        report.restype = ctypes.c_char_p
        return report().decode()
    return None


def package_versions() -> dict[str, str | None]:
    """``{distribution: version}`` of :data:`PACKAGES` (``None`` for one not installed), and
    ``"lapack"``: :func:`lapack_kernels`, the CPU kernels that round the solvers' factorisations."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["lapack"] = lapack_kernels()
    return versions


__all__ = ["PACKAGES", "lapack_kernels", "package_versions"]
