"""The solvers' factorisations: the blocked Cholesky and Cholesky solve against float64 NumPy,
and, under ``JAXPRUNE_FIXED_ORDER_SUMS=1``, a SparseGPT solve whose bits do not depend on the
OpenBLAS kernels or thread count that LAPACK would use (they do without the switch)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.methods import linalg
from jaxprune.methods.statistics import FIXED_ORDER
from jaxprune.pipeline.versions import lapack_kernels

ROOT = Path(__file__).resolve().parents[2]


def spd(n: int, seed: int = 0) -> np.ndarray:
    """A Hessian-like float64 matrix: ``XᵀX/N`` of correlated inputs, one large channel, damped."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3 * n + 8, n)) @ (np.eye(n) + 0.3 * rng.standard_normal((n, n)))
    x[:, 0] *= 10.0
    return x.T @ x / x.shape[0] + 0.01 * np.eye(n)


def relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# 1 and 5: below one block; 128: exactly one; 129 and 300: padded to whole blocks.
@pytest.mark.parametrize("n", [1, 5, 128, 129, 300])
def test_blocked_cholesky_is_as_accurate_as_lapacks(n):
    a64 = spd(n)
    a = jnp.asarray(a64, jnp.float32)
    lower = np.asarray(jax.jit(linalg.cholesky_blocked)(a))
    reference = np.linalg.cholesky(a64)
    assert np.all(np.triu(lower, 1) == 0)
    library = relative(jnp.linalg.cholesky(a), reference)
    assert relative(lower, reference) <= max(2.0 * library, 1e-6)


@pytest.mark.parametrize("n", [5, 129, 300])
@pytest.mark.parametrize("columns", [None, 1, 7])
def test_blocked_cho_solve_equals_the_float64_solve(n, columns):
    a64 = spd(n, seed=1)
    rng = np.random.default_rng(2)
    rhs = rng.standard_normal(n if columns is None else (n, columns))
    lower = jnp.asarray(np.linalg.cholesky(a64), jnp.float32)
    got = jax.jit(linalg.cho_solve_blocked)(lower, jnp.asarray(rhs, jnp.float32))
    assert got.shape == rhs.shape
    library = jax.scipy.linalg.cho_solve((lower, True), jnp.asarray(rhs, jnp.float32))
    expected = np.linalg.solve(a64, rhs)
    assert relative(got, expected) <= max(2.0 * relative(library, expected), 1e-5)


def test_blocked_cholesky_symmetrises_its_input_as_jax_does():
    a = spd(140)
    one_sided = jnp.asarray(a + np.triu(np.full_like(a, 1e-3), 1), jnp.float32)
    averaged = (one_sided + one_sided.T) / 2
    factor = jax.jit(linalg.cholesky_blocked)
    np.testing.assert_array_equal(factor(one_sided), factor(averaged))
    assert relative(factor(one_sided), jnp.linalg.cholesky(one_sided)) < 1e-5


def test_a_matrix_that_is_not_positive_definite_gives_non_finite_entries_like_lapack():
    a = spd(200)
    a[150, 150] = -1.0  # a negative pivot in the second block
    lower = np.asarray(linalg.cholesky_blocked(jnp.asarray(a, jnp.float32)))
    assert not np.isfinite(lower).all()
    assert not np.isfinite(np.asarray(jnp.linalg.cholesky(jnp.asarray(a, jnp.float32)))).all()


def test_the_switch_chooses_the_blocked_code_on_cpu_and_lapack_otherwise(monkeypatch):
    a = jnp.asarray(spd(260), jnp.float32)
    rhs = jnp.asarray(np.random.default_rng(3).standard_normal((260, 4)), jnp.float32)
    monkeypatch.delenv(FIXED_ORDER, raising=False)
    np.testing.assert_array_equal(linalg.cholesky(a), jnp.linalg.cholesky(a))
    lower = jnp.linalg.cholesky(a)
    np.testing.assert_array_equal(
        linalg.cho_solve(lower, rhs), jax.scipy.linalg.cho_solve((lower, True), rhs)
    )
    monkeypatch.setenv(FIXED_ORDER, "1")
    if jax.default_backend() == "cpu":
        blocked = jax.jit(linalg.cholesky_blocked)(a)
        np.testing.assert_array_equal(jax.jit(linalg.cholesky)(a), blocked)
        solved = jax.jit(linalg.cho_solve_blocked)(lower, rhs)
        np.testing.assert_array_equal(jax.jit(linalg.cho_solve)(lower, rhs), solved)


SOLVE = """
import hashlib
import jax.numpy as jnp, numpy as np
from jaxprune.core.sparsity import Unstructured
from jaxprune.methods import sparsegpt
rng = np.random.default_rng(0)
x = jnp.asarray(rng.standard_normal((2048, 384)), jnp.float32)
hessian = 2 * jnp.matmul(x.T, x, precision="highest") / 2048  # XLA's product, not numpy's BLAS
kernel = jnp.asarray(rng.standard_normal((384, 64)), jnp.float32)
pruned, _ = sparsegpt.prune_kernel(kernel, hessian, Unstructured(0.5))
print(hashlib.sha256(np.asarray(pruned).tobytes()).hexdigest())
"""


def _solve(coretype: str, threads: str, fixed: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != FIXED_ORDER}
    env.update(
        OPENBLAS_CORETYPE=coretype,
        OPENBLAS_NUM_THREADS=threads,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    if fixed:
        env[FIXED_ORDER] = "1"
    done = subprocess.run(
        [sys.executable, "-c", SOLVE], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


@pytest.mark.skipif(
    lapack_kernels() is None or platform.machine() not in {"x86_64", "AMD64"},
    reason="needs scipy's bundled OpenBLAS on x86-64",
)
def test_with_the_switch_a_sparsegpt_solve_does_not_depend_on_openblas():
    # Sandybridge (AVX) and Haswell (AVX2) kernels run on every x86-64 CPU CI can have; one
    # OpenBLAS thread splits the factorisations differently from two or more.
    assert _solve("Sandybridge", "1", fixed=False) != _solve("Haswell", "2", fixed=False)
    assert _solve("Sandybridge", "1", fixed=True) == _solve("Haswell", "2", fixed=True)
