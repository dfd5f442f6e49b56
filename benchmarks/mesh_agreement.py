"""One device vs a simulated 2×4 mesh on the real model: how far apart are the two prunes?

On the tiny test models a mesh prune equals the single-device one exactly (tests/test_sharding.py).
On SmolLM2-135M the statistics' sums run in a different order on a mesh (per-device partial sums,
then an all-reduce), so near-tied scores can flip. This measures the real tolerance: the fraction of
mask entries that agree, per block and overall, and the Hamlet perplexity of both prunes.

    python benchmarks/mesh_agreement.py --out benchmarks/results/mesh_agreement_cpu.json

It re-runs itself with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (8 CPU devices).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _common import write_json

FLAG = "--xla_force_host_platform_device_count=8"


def measure(args: argparse.Namespace) -> dict:
    import numpy as np

    import jaxprune as jp
    from jaxprune.core.paths import flat_leaves

    pre = jp.load_pretrained("smollm2-135m")
    calib = jp.load_windows(
        "shakespeare-calib", pre.tokenizer, nsamples=args.nsamples, seqlen=args.seqlen, seed=0
    )
    hamlet = jp.load_windows(
        "shakespeare-hamlet", pre.tokenizer, nsamples=32, seqlen=512, split="eval"
    )
    recipe = jp.Recipe(method=args.method, sparsity=args.sparsity)
    runs = {}
    for name, mesh in (("one device", None), ("2x4 mesh", jp.make_mesh((2, 4)))):
        result = jp.prune(pre.model, pre.params, calib, recipe, progress=False, mesh=mesh)
        runs[name] = {
            "masks": {p: np.asarray(m) for p, m in flat_leaves(result.masks).items()},
            "ppl": jp.perplexity(pre.model, result.params, hamlet, progress=False).ppl,
        }
    a, b = runs["one device"]["masks"], runs["2x4 mesh"]["masks"]
    per_block: dict[int, list[int]] = {}
    for path in a:
        block = int(path.split("/")[1])
        differ = int(np.sum(a[path] != b[path]))
        entry = per_block.setdefault(block, [0, 0])
        entry[0] += differ
        entry[1] += a[path].size
    total_differ = sum(v[0] for v in per_block.values())
    total = sum(v[1] for v in per_block.values())
    return {
        "model": "smollm2-135m",
        "method": args.method,
        "sparsity": args.sparsity,
        "calibration": f"shakespeare-calib {args.nsamples}x{args.seqlen} seed 0",
        "mask_entries": total,
        "mask_entries_differing": total_differ,
        "mask_agreement": 1.0 - total_differ / total,
        "differing_by_block": {k: v[0] for k, v in sorted(per_block.items())},
        "ppl_one_device": runs["one device"]["ppl"],
        "ppl_2x4_mesh": runs["2x4 mesh"]["ppl"],
        "ppl_relative_difference": runs["2x4 mesh"]["ppl"] / runs["one device"]["ppl"] - 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="sparsegpt")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--nsamples", type=int, default=64)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if FLAG not in os.environ.get("XLA_FLAGS", ""):
        env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FLAG}".strip()}
        sys.exit(subprocess.run([sys.executable, *sys.argv], env=env).returncode)
    result = measure(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        write_json(args.out, result, indent=1)


if __name__ == "__main__":
    main()
