"""Does SparseLLM's gain on the calibration tokens carry over to unseen text? One MLP at a time.

For each chosen block of an embedded model (SmolLM2-135M by default), the MLP inputs are captured
from the *dense* model on the calibration windows (``shakespeare-calib``, 64 × 512, seed 0) and on
held-out text (``shakespeare-hamlet``, 32 × 512). The MLP is pruned on the calibration inputs by
per-layer SparseGPT (SparseLLM's iterate 0: ``iterations=1``) and by SparseLLM with its defaults;
both are then scored by the relative MLP output error ‖Y − MLP_pruned(X)‖²/‖Y‖² on both sets of
inputs. The MLP's roles and activation come from the model family's record.

    python benchmarks/sparsellm_heldout.py --blocks 2 15 28 --targets 0.7 0.8 \\
        --out benchmarks/results/sparsellm_heldout_cpu.json
    python benchmarks/sparsellm_heldout.py --model gemma3-270m --bos --blocks 1 5 13 \\
        --out benchmarks/results/gemma3_sparsellm_heldout_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import protocol_windows, with_bos, write_json

import jaxprune as jp
from jaxprune.core.paths import get_leaf
from jaxprune.core.sparsity import parse_target
from jaxprune.methods import sparsellm
from jaxprune.methods.sparsellm_steps import ACTIVATIONS


def capture_mlp_inputs(
    model, params, windows, blocks, tap: str, batch_size: int = 8
) -> dict[int, np.ndarray]:
    """``{block: (tokens, hidden) float32}``: each block's MLP input through the dense model."""
    caps: dict[int, list[np.ndarray]] = {b: [] for b in blocks}
    step = jax.jit(lambda bp, h, i: model.block(bp, h, capture=True, index=i))
    for lo in range(0, windows.shape[0], batch_size):
        hidden = model.embed(params, jnp.asarray(windows[lo : lo + batch_size]))
        for i in range(max(blocks) + 1):
            hidden, taps = step(model.block_params(params, i), hidden, i)
            if i in caps:
                x = np.asarray(taps[tap], np.float32)
                caps[i].append(x.reshape(-1, x.shape[-1]))
    return {b: np.concatenate(c) for b, c in caps.items()}


def mlp(kernels, x, activation: str):
    gate = ACTIVATIONS[activation].fn(x @ kernels["gate"])
    return (gate * (x @ kernels["up"])) @ kernels["down"]


def relative_error(kernels, dense, x, activation: str) -> float:
    y = mlp(dense, x, activation)
    return float(jnp.sum((mlp(kernels, x, activation) - y) ** 2) / jnp.sum(y**2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--bos", action="store_true", help="start every window with BOS")
    parser.add_argument("--blocks", type=int, nargs="+", default=[2, 15, 28])
    parser.add_argument("--targets", nargs="+", default=["0.7", "0.8"])
    parser.add_argument("--option", action="append", default=[], help="sparsellm KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    options = {k: json.loads(v) for k, _, v in (o.partition("=") for o in args.option)}

    pre = jp.load_pretrained(args.model)
    spec = pre.model.family.mlp
    if spec is None or spec.kind != "gated":
        raise SystemExit(f"{args.model}: this script handles gated MLPs only")
    calib, held = protocol_windows(pre.tokenizer, 64, 512, 32, 0)
    if args.bos:
        calib = with_bos(calib, pre.tokenizer.bos_token_id)
        held = with_bos(held, pre.tokenizer.bos_token_id)
    act = spec.activation
    x_calib = capture_mlp_inputs(pre.model, pre.params, calib, args.blocks, spec.in_tap)
    x_held = capture_mlp_inputs(pre.model, pre.params, held, args.blocks, spec.in_tap)
    data = {"model": args.model, "bos": args.bos, "options": options, "results": []}
    for block in args.blocks:
        block_params = pre.model.block_params(pre.params, block)
        dense = {
            role: jnp.asarray(get_leaf(block_params, f"{path}/kernel"), jnp.float32)
            for role, path in spec.roles
        }
        xc, xh = jnp.asarray(x_calib[block]), jnp.asarray(x_held[block])
        y = mlp(dense, xc, act)
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
                    dict.fromkeys(dense, target),
                    kind=spec.kind,
                    activation=act,
                    **opts,
                )
                row[name] = {
                    "seconds": time.perf_counter() - start,
                    "calib_error": relative_error(sol.kernels, dense, xc, act),
                    "held_out_error": relative_error(sol.kernels, dense, xh, act),
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
