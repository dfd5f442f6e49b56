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

# The published config.json widths: hidden, MLP, layers, query heads, key/value heads, vocabulary.
WIDTHS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)
CONFIGS = {
    name: dict(zip(WIDTHS, values, strict=True))
    for name, values in {
        "LLaMA-2-7B": (4096, 11008, 32, 32, 32, 32000),
        "LLaMA-2-70B": (8192, 28672, 80, 64, 8, 32000),
        "Llama-3.1-405B": (16384, 53248, 126, 128, 8, 128256),
    }.items()
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
