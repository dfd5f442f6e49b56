"""SparseLLM's refit ridge scaled by the mean diagonal (the library) or per channel (an experiment).

The library damps every refit with ``λ = refit_percdamp · mean(diag G)``. On a Gram matrix with
one massive channel that mean is mostly that channel, so every other channel is over-damped
(``benchmarks/README.md``, "The refits' ridge"). The alternative measured here scales each
channel's ridge by its own diagonal, ``λ_j = refit_percdamp · G_jj``; it is not a library option,
so this driver swaps ``sparsellm_steps.damped_solve`` for the run. Cases: the unit tests' random
MLPs (``tests/methods/test_sparsellm.py``: 2,048 tokens, width 32, three inputs 8× larger, the
gated and ReLU kinds) at 70% and 80%, each ridge at 1e-2, 1e-3 and 1e-4; the figure is SparseLLM's
MLP output error over per-layer SparseGPT's (lower is better).

    python benchmarks/sparsellm_ridge_scaling.py \\
        --out benchmarks/results/sparsellm_ridge_random_cpu.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from _common import ROOT, write_json

from jaxprune.core.sparsity import Unstructured
from jaxprune.methods import linalg, sparsellm
from jaxprune.methods import sparsellm_steps as steps

sys.path.insert(0, str(ROOT / "tests" / "methods"))
import test_sparsellm as cases  # noqa: E402  (the tests' random MLPs and per-layer baseline)


@jax.jit
def per_channel_solve(gram: jax.Array, rhs: jax.Array, percdamp: jax.Array) -> jax.Array:
    """``(G + diag(λ))⁻¹ rhs`` with ``λ_j = percdamp·G_jj`` plus the library's floor."""
    lower = linalg.cholesky(gram + jnp.diag(percdamp * jnp.diagonal(gram) + 1e-8))
    return linalg.cho_solve(lower, rhs)


SCALINGS = {"mean": steps.damped_solve, "per_channel": per_channel_solve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--ridges", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4])
    args = parser.parse_args()
    rows = []
    try:
        for variant in cases.ALL:
            for sparsity in (0.7, 0.8):
                kernels, x, y, biases = cases.make_mlp(variant)
                target = Unstructured(sparsity)
                per_layer = cases.sparsegpt_per_layer(variant, kernels, x, biases, target)
                baseline = cases.output_error(variant, x, y, per_layer, biases)
                for scaling, solve in SCALINGS.items():
                    steps.damped_solve = solve
                    for ridge in args.ridges:
                        sol = sparsellm.prune_mlp(
                            kernels,
                            x,
                            y,
                            dict.fromkeys(kernels, target),
                            biases=biases,
                            refit_percdamp=ridge,
                            **cases.options(variant),
                        )
                        error = cases.output_error(variant, x, y, sol.kernels, sol.biases or biases)
                        row = {
                            "variant": variant,
                            "sparsity": sparsity,
                            "scaling": scaling,
                            "refit_percdamp": ridge,
                            "error_over_per_layer_sparsegpt": error / baseline,
                        }
                        rows.append(row)
                        print(row, flush=True)
    finally:
        steps.damped_solve = SCALINGS["mean"]
    write_json(args.out, {"rows": rows})


if __name__ == "__main__":
    main()
