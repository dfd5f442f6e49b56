"""Does SparseLLM's gain on the calibration tokens carry over to unseen text? One MLP at a time.

For each chosen block of SmolLM2-135M, the MLP inputs are captured from the *dense* model on the
calibration windows (``shakespeare-calib``, 64 × 512, seed 0) and on held-out text
(``shakespeare-hamlet``, 32 × 512). The MLP is pruned on the calibration inputs by per-layer
SparseGPT (SparseLLM's iterate 0: ``iterations=1``) and by SparseLLM with its defaults; both are
then scored by the relative MLP output error ‖Y − MLP_pruned(X)‖²/‖Y‖² on both sets of inputs.

    python benchmarks/sparsellm_heldout.py --blocks 2 15 28 --targets 0.7 0.8 \\
        --out benchmarks/results/sparsellm_heldout_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from oneshot import write_json

import jaxprune as jp
from jaxprune.core.sparsity import parse_target
from jaxprune.methods import sparsellm

# SparseLLM's roles and the SmolLM2 (LLaMA) linears playing them.
ROLES = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


def capture_mlp_inputs(
    model, params, windows, blocks, batch_size: int = 8
) -> dict[int, np.ndarray]:
    """``{block: (tokens, hidden) float32}``: each block's MLP input through the dense model."""
    caps: dict[int, list[np.ndarray]] = {b: [] for b in blocks}
    for lo in range(0, windows.shape[0], batch_size):
        hidden = model.embed(params, jnp.asarray(windows[lo : lo + batch_size]))
        for i in range(max(blocks) + 1):
            hidden, taps = model.block(model.block_params(params, i), hidden, capture=True)
            if i in caps:
                x = np.asarray(taps["mlp_in"], np.float32)
                caps[i].append(x.reshape(-1, x.shape[-1]))
    return {b: np.concatenate(c) for b, c in caps.items()}


def mlp(kernels, x):
    return (jax.nn.silu(x @ kernels["gate"]) * (x @ kernels["up"])) @ kernels["down"]


def relative_error(kernels, dense, x) -> float:
    y = mlp(dense, x)
    return float(jnp.sum((mlp(kernels, x) - y) ** 2) / jnp.sum(y**2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[2, 15, 28])
    parser.add_argument("--targets", nargs="+", default=["0.7", "0.8"])
    parser.add_argument("--option", action="append", default=[], help="sparsellm KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    options = {k: json.loads(v) for k, _, v in (o.partition("=") for o in args.option)}

    pre = jp.load_pretrained("smollm2-135m")
    calib = jp.load_windows(
        "shakespeare-calib", pre.tokenizer, nsamples=64, seqlen=512, seed=0, split="calib"
    )
    held = jp.load_windows(
        "shakespeare-hamlet", pre.tokenizer, nsamples=32, seqlen=512, split="eval"
    )
    x_calib = capture_mlp_inputs(pre.model, pre.params, calib, args.blocks)
    x_held = capture_mlp_inputs(pre.model, pre.params, held, args.blocks)
    data = {"options": options, "results": []}
    for block in args.blocks:
        mlp_params = pre.model.block_params(pre.params, block)["mlp"]
        dense = {r: jnp.asarray(mlp_params[k]["kernel"], jnp.float32) for r, k in ROLES.items()}
        xc, xh = jnp.asarray(x_calib[block]), jnp.asarray(x_held[block])
        y = mlp(dense, xc)
        for text in args.targets:
            target = parse_target(text)
            row = {"block": block, "target": text, "calib_tokens": xc.shape[0]}
            row["held_tokens"] = xh.shape[0]
            for name, opts in (("sparsegpt", {**options, "iterations": 1}), ("sparsellm", options)):
                start = time.perf_counter()
                sol = sparsellm.prune_mlp(
                    dense,
                    xc,
                    y,
                    dict.fromkeys(ROLES, target),
                    kind="gated",
                    activation="silu",
                    **opts,
                )
                row[name] = {
                    "seconds": time.perf_counter() - start,
                    "calib_error": relative_error(sol.kernels, dense, xc),
                    "held_out_error": relative_error(sol.kernels, dense, xh),
                }
            for split in ("calib_error", "held_out_error"):
                row[f"{split}_ratio"] = row["sparsellm"][split] / row["sparsegpt"][split]
            data["results"].append(row)
            write_json(args.out, data)
            print(
                f"block {block:2d} {text:>4}: SparseLLM/SparseGPT MLP error, calibration "
                f"{row['calib_error_ratio']:.3f}, held out {row['held_out_error_ratio']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
