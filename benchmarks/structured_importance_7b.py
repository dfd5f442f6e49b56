"""LLM-Pruner's importance pass at LLaMA-2-7B shape on one accelerator: seconds and peak memory.

Random bfloat16 weights of LLaMA-2-7B's shape (32 blocks, hidden 4096, MLP 11008, 32 heads,
vocabulary 32000), calibration as in the LLM-Pruner paper: 10 windows × 64 random tokens. For each
importance kind the whole structured prune runs (gradients of the mean next-token loss for the
member linears of blocks 4–29 in float32, group scores, per-block selection, shrink to 20% fewer
non-embedding parameters) and prints one JSON line: the device, the kind, ``gradient_seconds``
(the gradient pass alone, compilation included, measured separately before the prune),
``score_seconds`` (gradients + group scores inside the prune), ``total_seconds`` and
``peak_memory_bytes`` (the device's peak since the process started; ``null`` on CPU).

Memory (bfloat16 params 13.5 GB; float32 gradients of the pruned blocks' linears 21 GB, and as
much again for ``element2``'s Fisher; per-window gradients are added into them one window at a
time) stays within one 80 GB device. ``--small`` is a shape that runs on a CPU in seconds::

    python benchmarks/structured_importance_7b.py --out benchmarks/results/structured_7b.jsonl
    python benchmarks/structured_importance_7b.py --small
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import append_jsonl
from accelerator_llama7b import LLAMA2_7B, SMALL, peak_memory_bytes, random_params

import jaxprune as jp
from jaxprune.models import LanguageModel, LlamaConfig
from jaxprune.structured.importance import gradients

KINDS = ("vector", "element1", "element2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="a tiny shape that runs on a CPU")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=["vector", "element2"])
    parser.add_argument("--nsamples", type=int, default=10)
    parser.add_argument("--seqlen", type=int, default=64)
    parser.add_argument("--sparsity", type=float, default=0.2)
    parser.add_argument("--remat", action="store_true", help="recompute block activations")
    parser.add_argument("--out", type=Path, help="append one JSON line per kind to this file")
    args = parser.parse_args()

    shape = SMALL if args.small else LLAMA2_7B
    config = LlamaConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
    )
    model = LanguageModel(config, dtype=jnp.bfloat16)
    params = jax.block_until_ready(random_params(model, seed=0))
    windows = np.random.default_rng(0).integers(
        0, config.vocab_size, (args.nsamples, args.seqlen), dtype=np.int32
    )
    device = jax.devices()[0]
    for kind in args.kinds:
        # First-order kinds take the batch gradient in one step (as LLM-Pruner does); element2
        # needs per-window gradients, one window at a time.
        chunk = 1 if kind == "element2" else args.nsamples
        recipe = jp.StructuredRecipe(
            importance=kind, sparsity=args.sparsity, chunk=chunk, remat=args.remat
        )
        blocks = recipe.blocks(model.num_blocks)
        paths = [
            f"layers/{i}/{group}/{name}/kernel"
            for i in blocks
            for group, names in (("self_attn", "qkvo"), ("mlp", ("gate", "up", "down")))
            for name in (f"{n}_proj" for n in names)
        ]
        start = time.perf_counter()
        grads = gradients(
            model,
            params,
            windows,
            paths,
            second_order=kind == "element2",
            chunk=chunk,
            remat=args.remat,
        )
        jax.block_until_ready(grads)
        gradient_seconds = time.perf_counter() - start
        del grads
        start = time.perf_counter()
        result = jp.prune_structured(model, params, windows, recipe)
        jax.block_until_ready(result.params)
        total = time.perf_counter() - start
        entry = {
            "device": device.device_kind,
            "kind": kind,
            "layers": shape["layers"],
            "hidden": shape["hidden"],
            "intermediate": shape["intermediate"],
            "dtype": "bfloat16",
            "windows": args.nsamples,
            "seqlen": args.seqlen,
            "pruned_blocks": [blocks[0], blocks[-1]],
            "gradient_seconds": gradient_seconds,
            "score_seconds": result.report["score_seconds"],
            "total_seconds": total,
            "params_before": result.report["params_before"],
            "params_after": result.report["params_after"],
            "peak_memory_bytes": peak_memory_bytes(),
            "jax": jax.__version__,
        }
        del result
        print(append_jsonl(args.out, entry) if args.out else json.dumps(entry), flush=True)


if __name__ == "__main__":
    main()
