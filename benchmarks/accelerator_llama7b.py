"""Pruning cost at LLaMA-2-7B scale: Wanda 50%, SparseGPT 50% and SparseGPT 2:4 on random weights.

The default shape is LLaMA-2-7B's (32 layers, hidden 4096, MLP 11008, 32 heads, vocabulary 32000)
in bfloat16 with 128 × 2048 random calibration tokens, meant for one 80 GB accelerator (an H100):
the bfloat16 params take 13.5 GB, the hidden states of the windows 2 GB. ``--small`` (or the shape
flags) gives a model that runs on a CPU in seconds, to check the script::

    python benchmarks/accelerator_llama7b.py --out benchmarks/results/llama7b_h100.jsonl
    python benchmarks/accelerator_llama7b.py --small
    python benchmarks/accelerator_llama7b.py --mesh 1x8 --offload   # 8 devices, params on host

The weights are random (normal, std 0.02; norm scales 1), generated block by block directly in
bfloat16 on the device (or moved to the host one block at a time with ``--offload``), so the
full-size model never exists in float32. Random weights make the cost, not the quality, meaningful.

Each configuration prints (and appends to ``--out``) one JSON object: the device kind, method,
target, shape, calibration tokens, the engine's timings — ``total_seconds`` (the whole prune,
compilation included), ``forward_seconds`` (block forward passes), ``stats_seconds`` (statistics
and reconstruction-error sums from the captured inputs), ``solve_seconds`` (the per-kernel
solvers) — and ``peak_memory_bytes``, the device's peak allocation since the process started
(``device.memory_stats()``; ``null`` where the platform reports none, as on CPU). The peak is not
reset between configurations, so a later configuration's value is the peak of it and everything
before it; run one ``--methods`` entry per process for separate peaks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from _common import append_jsonl

import jaxprune as jp
from jaxprune import sharding
from jaxprune.models import LanguageModel, LlamaConfig

CONFIGS = {
    "wanda-0.5": ("wanda", 0.5),
    "sparsegpt-0.5": ("sparsegpt", 0.5),
    "sparsegpt-2:4": ("sparsegpt", "2:4"),
    "sparsegpt-0.7": ("sparsegpt", 0.7),
    "sparsellm-0.7": ("sparsellm", 0.7),
}
LLAMA2_7B = {
    "layers": 32,
    "hidden": 4096,
    "intermediate": 11008,
    "heads": 32,
    "vocab": 32000,
    "nsamples": 128,
    "seqlen": 2048,
}
SMALL = {
    "layers": 4,
    "hidden": 256,
    "intermediate": 688,
    "heads": 4,
    "vocab": 512,
    "nsamples": 16,
    "seqlen": 256,
}


def _filler(abstract: Any, std: float):
    """A compiled ``key -> arrays shaped like abstract``: normal(0, std), norm scales ones."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract)

    def fill(key: jax.Array) -> Any:
        keys = jax.random.split(key, len(flat))
        leaves = [
            jnp.ones(leaf.shape, leaf.dtype)
            if getattr(path[-1], "key", None) == "scale"
            else std * jax.random.normal(k, leaf.shape, leaf.dtype)
            for k, (path, leaf) in zip(keys, flat, strict=True)
        ]
        return jax.tree_util.tree_unflatten(treedef, leaves)

    return jax.jit(fill)


def random_params(
    model: LanguageModel, seed: int = 0, std: float = 0.02, host: bool = False
) -> dict[str, Any]:
    """Random params of ``model`` in its dtype, made one block at a time on the default device.

    Args:
      model: the architecture; its ``dtype`` is the params' dtype.
      seed: the random seed.
      std: standard deviation of the weights.
      host: move each block to host memory (NumPy) as soon as it is made.

    Returns:
      Nested-dict params as :meth:`LanguageModel.init_params` lays them out.
    """
    # Shapes only: nothing of the full model is allocated here.
    abstract = jax.eval_shape(lambda: model.init_params(0))
    keys = jax.random.split(jax.random.key(seed), model.num_blocks + 1)
    place = jax.device_get if host else (lambda tree: tree)
    params = place(_filler({k: v for k, v in abstract.items() if k != "layers"}, std)(keys[-1]))
    # Every block has the same shapes, so one compiled generator makes all of them.
    block = _filler(abstract["layers"][0], std)
    params["layers"] = {i: place(block(keys[i])) for i in range(model.num_blocks)}
    return params


def peak_memory_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return None if not stats else int(stats.get("peak_bytes_in_use", 0)) or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="a tiny shape that runs on a CPU")
    for name in LLAMA2_7B:
        parser.add_argument(f"--{name}", type=int, help=f"override the shape's {name}")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(CONFIGS),
        default=["wanda-0.5", "sparsegpt-0.5", "sparsegpt-2:4"],
    )
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--mesh", help="DATAxMODEL, e.g. 1x8 (default: no mesh, one device)")
    parser.add_argument("--offload", action="store_true", help="params on the host, one block")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--profile", action="store_true", help="split the passes into forward and statistics time"
    )
    parser.add_argument(
        "--errors",
        choices=["auto", "on", "off"],
        default="auto",
        help="per-linear reconstruction errors in the report (jaxprune.prune's errors=)",
    )
    parser.add_argument("--out", type=Path, help="append one JSON line per result to this file")
    args = parser.parse_args()

    shape = dict(SMALL if args.small else LLAMA2_7B)
    shape.update({k: getattr(args, k) for k in shape if getattr(args, k) is not None})
    config = LlamaConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        max_position_embeddings=max(2048, shape["seqlen"]),
    )
    model = LanguageModel(config, dtype=jnp.bfloat16)
    mesh = sharding.make_mesh(sharding.parse_mesh(args.mesh)) if args.mesh else None

    t0 = time.perf_counter()
    params = jax.block_until_ready(random_params(model, args.seed, host=args.offload))
    setup_seconds = time.perf_counter() - t0
    windows = np.random.default_rng(args.seed).integers(
        0, config.vocab_size, (shape["nsamples"], shape["seqlen"]), dtype=np.int32
    )
    device = jax.devices()[0]
    print(
        f"{device.device_kind} ×{jax.device_count()}: random bf16 model of {shape['layers']} "
        f"blocks made in {setup_seconds:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    for name in args.methods:
        method, target = CONFIGS[name]
        recipe = jp.Recipe(method=method, sparsity=target, batch_size=args.batch_size)
        errors = {"auto": None, "on": True, "off": False}[args.errors]
        result = jp.prune(
            model,
            params,
            windows,
            recipe,
            progress=False,
            mesh=mesh,
            offload=args.offload,
            errors=errors,
            profile=args.profile,
        )
        report = result.report
        del result
        entry = {
            "device": device.device_kind,
            "devices": jax.device_count(),
            "mesh": args.mesh,
            "offload": args.offload,
            "method": method,
            "sparsity": 0.5 if isinstance(target, str) else target,
            "pattern": target if isinstance(target, str) else None,
            "errors": args.errors,
            "layers": shape["layers"],
            "hidden": shape["hidden"],
            "intermediate": shape["intermediate"],
            "heads": shape["heads"],
            "vocab": shape["vocab"],
            "dtype": "bfloat16",
            "calib_windows": shape["nsamples"],
            "seqlen": shape["seqlen"],
            "calib_tokens": shape["nsamples"] * shape["seqlen"],
            "total_seconds": report["seconds"],
            "forward_seconds": report.get("forward_seconds"),
            "stats_seconds": report.get("stats_seconds"),
            "solve_seconds": report["solve_seconds"],
            "joint_seconds": sum(e["seconds"] for e in report.get("joint_mlp", {}).values()),
            "capture_seconds": report["capture_seconds"],
            "propagate_seconds": report["propagate_seconds"],
            "overall_sparsity": report["overall_sparsity"],
            "peak_memory_bytes": peak_memory_bytes(),
            "setup_seconds": setup_seconds,
            "jax": jax.__version__,
        }
        print(append_jsonl(args.out, entry) if args.out else json.dumps(entry), flush=True)


if __name__ == "__main__":
    main()
