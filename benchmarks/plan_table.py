"""The per-device memory table of `jaxprune plan` for LLaMA-2-7B, LLaMA-2-70B and Llama-3.1-405B.

    python benchmarks/plan_table.py --out benchmarks/results/plan_table.json

Arithmetic only (:mod:`jaxprune.footprint`, the shapes of the models' published config.json
files): SparseGPT and SparseLLM, 128 windows × 2048 tokens, bfloat16 params, meshes of 1 (1x1),
8 (1x8: kernels split 8 ways) and 64 (8x8) devices, with and without host offload. Prints a
Markdown table (GiB per device) for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxprune import footprint

CONFIGS = {
    "LLaMA-2-7B": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
    "LLaMA-2-70B": dict(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=32000,
    ),
    "Llama-3.1-405B": dict(
        hidden_size=16384,
        intermediate_size=53248,
        num_hidden_layers=126,
        num_attention_heads=128,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
}
MESHES = ((1, 1), (1, 8), (8, 8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rows = []
    for name, config in CONFIGS.items():
        shapes = footprint.Shapes.from_hf_config({"model_type": "llama", **config})
        for method in ("sparsegpt", "sparsellm"):
            for offload in (False, True):
                for mesh in MESHES:
                    job = footprint.Job(method, mesh=mesh, dtype_bytes=2, offload=offload)
                    plan = footprint.plan(shapes, job)
                    rows.append(
                        {
                            "model": name,
                            "method": method,
                            "offload": offload,
                            "mesh": f"{mesh[0]}x{mesh[1]}",
                            "peak_bytes": plan.peak_bytes,
                            **{f"{k}_bytes": v for k, v in plan.categories.items()},
                        }
                    )
    Path(args.out).write_text(json.dumps(rows, indent=1))
    gib = 2**30
    print("| model | method | offload | " + " | ".join(f"{a}x{b}" for a, b in MESHES) + " |")
    print("|---|---|---|" + "---:|" * len(MESHES))
    for i in range(0, len(rows), len(MESHES)):
        group = rows[i : i + len(MESHES)]
        peaks = " | ".join(f"{r['peak_bytes'] / gib:,.1f}" for r in group)
        print(
            f"| {group[0]['model']} | {group[0]['method']} | "
            f"{'yes' if group[0]['offload'] else 'no'} | {peaks} |"
        )


if __name__ == "__main__":
    main()
