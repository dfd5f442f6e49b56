"""The recorded LAPACK kernels: which OpenBLAS kernel set jaxlib's CPU factorisations run on.

jaxlib takes LAPACK from scipy's bundled OpenBLAS, which picks its kernels for the CPU; two
machines with the same package versions can therefore factorise the same Hessian into different
bits (the demo printed 59.67 and 60.62 on one machine with two kernel sets). These tests check
that the record names the kernel set in use and that the kernel set does change jax's Cholesky.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from jaxprune.pipeline.versions import lapack_kernels, package_versions

BUNDLED = lapack_kernels() is not None
X86 = platform.machine() in {"x86_64", "AMD64"}


def _run(code: str, coretype: str) -> str:
    env = {**os.environ, "OPENBLAS_CORETYPE": coretype, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_versions_record_holds_scipy_and_the_lapack_kernels():
    import scipy

    versions = package_versions()
    assert versions["scipy"] == scipy.__version__
    assert versions["lapack"] == lapack_kernels()


@pytest.mark.skipif(not (BUNDLED and X86), reason="needs scipy's bundled OpenBLAS on x86-64")
def test_the_record_names_the_kernel_set_that_openblas_chose():
    code = "from jaxprune.pipeline.versions import lapack_kernels; print(lapack_kernels())"
    # Sandybridge (AVX) and Haswell (AVX2, FMA) run on every x86-64 CPU CI can have.
    assert "Sandybridge" in _run(code, "Sandybridge").split()
    assert "Haswell" in _run(code, "Haswell").split()


@pytest.mark.skipif(not (BUNDLED and X86), reason="needs scipy's bundled OpenBLAS on x86-64")
def test_the_kernel_set_changes_the_bits_of_jax_cholesky():
    # The factorisation SparseGPT uses (jaxprune.methods.obs), on a Hessian-like float32 matrix
    # wide enough for OpenBLAS's blocked kernels; the digest of its bits under each kernel set.
    code = """
import hashlib
import jax, jax.numpy as jnp, numpy as np
x = np.random.default_rng(0).standard_normal((2048, 512)).astype(np.float32)
h = jnp.asarray(x.T @ x + 0.01 * np.eye(512, dtype=np.float32))
lower = np.asarray(jnp.linalg.cholesky(h))
assert np.isfinite(lower).all()
print(hashlib.sha256(lower.tobytes()).hexdigest())
"""
    assert _run(code, "Sandybridge") != _run(code, "Haswell")
