"""Prints a Markdown table of a results JSON written by ``benchmarks/oneshot.py``.

python benchmarks/summarize.py benchmarks/results/oneshot_cpu.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(data: dict) -> str:
    proto = data["protocol"]
    unit = data["dense_forward_seconds"]
    lines = [
        f"Model `{data['model']}`; calibration `{proto['calib']}` {proto['nsamples']} × "
        f"{proto['seqlen']} (seed {proto['seed']}); evaluation `{proto['eval']}` "
        f"{proto['eval_nsamples']} × {proto['seqlen']} ({proto['eval_tokens']} predicted tokens). "
        f"Machine: {data['machine']['cpu_count']} × {data['machine']['device']}, "
        f"jax {data['machine']['jax']}. Cost unit: one dense forward (logits) over the "
        f"calibration windows, {unit:.1f} s in this run.",
        "",
        "| configuration | sparsity | perplexity | prune cost (× dense forward) | CPU seconds |",
        "|---|---|---|---|---|",
    ]
    for r in data["results"]:
        if r["config"] == "dense":
            lines.append(f"| dense | 0 | {r['ppl']:.2f} | – | – |")
            continue
        lines.append(
            f"| {r['config']} | {r['overall_sparsity']:.3f} | {r['ppl']:.2f} | "
            f"{r['cost_vs_dense_forward']:.1f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(table(json.loads(Path(name).read_text())))
        print()
