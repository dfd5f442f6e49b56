"""DSnoT on single random layers: the layer error before and after, monotone rule vs the authors'.

Each seed draws inputs with correlated features, unequal scales and non-zero means (what DSnoT's
error reads) and a weight matrix; every base method prunes it, then ``BASE+dsnot`` refines it with
``monotone`` true (the default: a swap must reduce the output-mean error) and false (the authors'
unstructured rule). Recorded: the relative layer error ‖X(W − Ŵ)‖²/‖XW‖², the mean targeted error
|r_j| = |Σ_i (W − Ŵ)_ij μ_i| and the number of swapped weights, as mean ± std (ddof 1) over seeds.

    python benchmarks/dsnot_layer.py --out benchmarks/results/dsnot_layer_cpu.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxprune.core.sparsity import parse_target
from jaxprune.methods import get_method

BASES = ("magnitude", "wanda", "ria", "sparsegpt")


def draw(seed: int, d_in: int, d_out: int, tokens: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mix = np.eye(d_in) + 0.5 * rng.normal(size=(d_in, d_in)) / np.sqrt(d_in)
    scales, means = rng.uniform(0.2, 3, d_in), rng.normal(size=d_in) * rng.uniform(0, 2, d_in)
    x = (rng.normal(size=(tokens, d_in)) * scales) @ mix + means
    return x.astype(np.float32), (rng.normal(size=(d_in, d_out)) * 0.05).astype(np.float32)


def solve(name: str, x: np.ndarray, w: np.ndarray, target, **options):
    method = get_method(name)
    state = None
    if method.statistics is not None:
        state = method.statistics.update(method.statistics.init(w.shape[0]), jnp.asarray(x))
    kernel, keep = method.solve(jnp.asarray(w), state, target, **{**method.options, **options})
    return np.asarray(kernel, np.float64), np.asarray(keep)


def measures(x: np.ndarray, w: np.ndarray, kernel: np.ndarray) -> tuple[float, float]:
    x = x.astype(np.float64)
    error = np.linalg.norm(x @ (w - kernel)) ** 2 / np.linalg.norm(x @ w) ** 2
    return float(error), float(np.abs(((w - kernel) * x.mean(0)[:, None]).sum(0)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=2, default=(256, 64))
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--targets", nargs="+", default=["0.7", "2:4"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    for text in args.targets:
        target = parse_target(text)
        for base in BASES:
            runs: dict[str, list[tuple[float, float, int]]] = {}
            for seed in range(args.seeds):
                x, w = draw(seed, *args.shape, args.tokens)
                kernel, keep = solve(base, x, w, target)
                runs.setdefault("base", []).append((*measures(x, w, kernel), 0))
                for monotone in (True, False):
                    new, new_keep = solve(f"{base}+dsnot", x, w, target, monotone=monotone)
                    swaps = int((new_keep != keep).sum() // 2)
                    runs.setdefault(f"dsnot monotone={monotone}", []).append(
                        (*measures(x, w, new), swaps)
                    )
            for variant, values in runs.items():
                arr = np.array(values, np.float64)
                row = {
                    "target": text,
                    "base": base,
                    "variant": variant,
                    "layer_error": [arr[:, 0].mean(), arr[:, 0].std(ddof=1)],
                    "mean_abs_r": [arr[:, 1].mean(), arr[:, 1].std(ddof=1)],
                    "swaps": [arr[:, 2].mean(), arr[:, 2].std(ddof=1)],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {"seeds": args.seeds, "shape": list(args.shape), "tokens": args.tokens}
    args.out.write_text(json.dumps({"config": config, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
