"""Where a one-shot prune spends its work: FLOPs per phase, and the fraction of peak each achieves.

For a LLaMA shape this counts the floating-point work of each phase of ``jaxprune.prune`` —
block forward passes (capture and propagate), statistics (Hessians ``XᵀX``), solver
factorisations and SparseGPT sweeps — then runs a medium shape on this machine with
``profile=True``, and divides each phase's FLOPs by its measured seconds. The baseline, measured in
the same run, is the rate of one large float32 matmul (what the machine can do), so each phase's
efficiency is a fraction of that.

    python benchmarks/phase_flops.py --out benchmarks/results/phase_flops_cpu.json
    python benchmarks/phase_flops.py --count-only           # the LLaMA-2-7B counts, no run

The counts are exact up to elementwise work (norms, rotary, softmax, SiLU), which is below 1% of
every phase at these shapes.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import write_json
from accelerator_llama7b import random_params

import jaxprune as jp
from jaxprune.models import LanguageModel, LlamaConfig

LLAMA2_7B = dict(layers=32, hidden=4096, intermediate=11008, heads=32, nsamples=128, seqlen=2048)
MEDIUM = dict(layers=2, hidden=768, intermediate=2048, heads=12, nsamples=16, seqlen=512)


def phase_flops(s: dict, method: str = "sparsegpt", blocksize: int = 128) -> dict[str, float]:
    """FLOPs of each phase of a prune of every linear of every block (see the module docstring)."""
    d, f, t = s["hidden"], s["intermediate"], s["nsamples"] * s["seqlen"]
    linear_params = 4 * d * d + 3 * d * f
    # Causal attention: QKᵀ and PV over half the (seq × seq) pairs, per window.
    attention = 2 * 2 * s["nsamples"] * s["seqlen"] ** 2 * d / 2
    forward = 2 * t * linear_params + attention
    out = {"forward": 2 * forward * s["layers"]}  # capture pass + propagate pass
    if method in ("sparsegpt", "sparsellm"):
        taps = [d, d, d, f]  # attn_in, o_in, mlp_in, down_in
        out["statistics"] = s["layers"] * sum(2 * t * n * n for n in taps)
        # Per shared Hessian: Cholesky (n³/3), inverse (n³), Cholesky of the inverse (n³/3).
        factor = sum(5 / 3 * n**3 for n in taps)
        # Sweep of an (n_in, n_out) kernel: the column steps touch a blocksize × n_out block per
        # input, and the lazy batch updates the rest: about n_in · n_out · (blocksize + n_in).
        kernels = [(d, 3 * d), (d, d), (d, 2 * f), (f, d)]
        sweep = sum(2 * n_in * n_out * (blocksize + n_in / 2) for n_in, n_out in kernels)
        out["solve"] = s["layers"] * (factor + sweep)
    else:
        out["statistics"] = s["layers"] * 2 * t * (3 * d + f)
        out["solve"] = 0.0
    return out


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of one large float32 matmul on the default device (the baseline)."""
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def measure(shape: dict, method: str) -> dict:
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        max_position_embeddings=max(2048, shape["seqlen"]),
    )
    model = LanguageModel(config)
    params = random_params(model, 0)
    windows = np.random.default_rng(0).integers(0, 512, (shape["nsamples"], shape["seqlen"]))
    recipe = jp.Recipe(method=method, sparsity=0.5)
    # The first run compiles; the second is timed.
    jp.prune(model, params, windows, recipe, progress=False, profile=True)
    report = jp.prune(model, params, windows, recipe, progress=False, profile=True).report
    return {
        "forward": report["forward_seconds"],
        "statistics": report["stats_seconds"],
        "solve": report["solve_seconds"],
        "total": report["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count-only", action="store_true")
    parser.add_argument("--methods", nargs="+", default=["sparsegpt", "wanda"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result: dict = {
        "llama2_7b_flops": {m: phase_flops(LLAMA2_7B, m) for m in args.methods},
        "medium_shape": MEDIUM,
    }
    if not args.count_only:
        peak = matmul_rate()
        result["machine"] = {
            "device": jax.devices()[0].device_kind,
            "platform": platform.platform(),
            "jax": jax.__version__,
            "matmul_flops_per_second": peak,
        }
        result["medium"] = {}
        for method in args.methods:
            flops = phase_flops(MEDIUM, method)
            seconds = measure(MEDIUM, method)
            result["medium"][method] = {
                phase: {
                    "flops": flops[phase],
                    "seconds": seconds[phase],
                    "fraction_of_matmul_rate": (flops[phase] / seconds[phase] / peak)
                    if seconds[phase]
                    else None,
                }
                for phase in flops
            }
            result["medium"][method]["total_seconds"] = seconds["total"]
            print(json.dumps({method: result["medium"][method]}), flush=True)
    text = json.dumps(result, indent=1)
    print(text if args.count_only else "", flush=True)
    if args.out:
        write_json(args.out, result, indent=1)


if __name__ == "__main__":
    main()
