"""The cost of reproducible factorisations: LAPACK (scipy's OpenBLAS) against jaxprune's blocked
Cholesky in XLA (``jaxprune/methods/linalg.py``), on SparseGPT's chain at several widths.

The chain is what ``methods/obs.py`` computes per Hessian: ``L = chol(H + λI)``,
``H⁻¹ = cho_solve(L, I)``, ``U = chol(H⁻¹)ᵀ``. For each width and path: the first call (compile
and run) and the median of ``--repeats`` later calls, both in one process, so the ratio
blocked / LAPACK is the figure to read (absolute seconds only describe this machine).

    python benchmarks/factorisation_cpu.py --out benchmarks/results/factorisation_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import write_json

from jaxprune.methods import linalg


def lapack_chain(h: jax.Array) -> jax.Array:
    eye = jnp.eye(h.shape[0], dtype=h.dtype)
    lower = jnp.linalg.cholesky(h)
    return jnp.linalg.cholesky(jax.scipy.linalg.cho_solve((lower, True), eye)).T


def blocked_chain(h: jax.Array) -> jax.Array:
    eye = jnp.eye(h.shape[0], dtype=h.dtype)
    lower = linalg.cholesky_blocked(h)
    return linalg.cholesky_blocked(linalg.cho_solve_blocked(lower, eye)).T


def hessian(width: int, seed: int = 0) -> jax.Array:
    x = jnp.asarray(np.random.default_rng(seed).standard_normal((4096, width)), jnp.float32)
    h = 2 * jnp.matmul(x.T, x, precision="highest") / x.shape[0]
    return h + 0.01 * jnp.mean(jnp.diagonal(h)) * jnp.eye(width, dtype=jnp.float32)


def timed(fn, h: jax.Array, repeats: int) -> dict[str, float]:
    compiled = jax.jit(fn)
    start = time.perf_counter()
    out = compiled(h).block_until_ready()
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        compiled(h).block_until_ready()
        runs.append(time.perf_counter() - start)
    return {"first_call_s": first, "median_s": statistics.median(runs), "out": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--widths", type=int, nargs="+", default=[576, 1536, 2048])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.repeats < 1 or min(args.widths) < 1:
        parser.error("--repeats and --widths must be positive")
    rows = []
    for width in args.widths:
        h = hessian(width)
        lapack = timed(lapack_chain, h, args.repeats)
        blocked = timed(blocked_chain, h, args.repeats)
        a, b = np.asarray(lapack.pop("out")), np.asarray(blocked.pop("out"))
        row = {
            "width": width,
            "lapack": lapack,
            "blocked": blocked,
            "median_ratio_blocked_over_lapack": blocked["median_s"] / lapack["median_s"],
            "max_relative_difference": float(np.max(np.abs(a - b)) / np.max(np.abs(a))),
        }
        rows.append(row)
        print(row, flush=True)
    write_json(args.out, {"repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
