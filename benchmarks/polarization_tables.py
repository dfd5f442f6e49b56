"""Markdown tables of ``polarization.py`` and ``regimes.py`` results (for benchmarks/README.md).

    python benchmarks/polarization_tables.py benchmarks/results/polarization_cpu.json \
        benchmarks/results/regimes_cpu.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def polarization(data: dict) -> str:
    lines = [
        "| dataset | model | method | test acc. | MFLOPs (MACs) | % of dense | channels kept | "
        "wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    dense = {(r["dataset"], r["arch"], r["seed"]): r["flops"] for r in data["runs"]
             if r["method"] == "dense"}  # fmt: skip
    for r in data["runs"]:
        base = dense.get((r["dataset"], r["arch"], r["seed"]), r["flops"])
        kept = f"{r['density']:.2f}" if "density" in r else (
            f"uniform {1 - r['fraction']:.2f}" if "fraction" in r else "1.00")  # fmt: skip
        acc = f"{r['test_accuracy']:.4f}"
        if "pruned_accuracy" in r:
            acc += f" (after pruning {r['pruned_accuracy']:.4f})"
        if "regularized_accuracy" in r:
            acc += f" (before removal {r['regularized_accuracy']:.4f})"
        if "unfolded_accuracy" in r:
            acc += f" (without the β fold {r['unfolded_accuracy']:.4f})"
        lines.append(
            f"| {r['dataset']} | {r['arch']} | {r['method']} | {acc} | {r['flops'] / 1e6:.3f} | "
            f"{100 * r['flops'] / base:.1f} | {kept} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} |"
        )
    return "\n".join(lines)


def seeds_summary(data: dict) -> str:
    """Mean ± std (ddof 1; the seeds column says how many) over seeds of test accuracy and FLOPs
    (% of dense) per dataset, model, method."""
    dense = {(r["dataset"], r["arch"], r["seed"]): r["flops"] for r in data["runs"]
             if r["method"] == "dense"}  # fmt: skip
    cells = defaultdict(list)
    for r in data["runs"]:
        base = dense.get((r["dataset"], r["arch"], r["seed"]), r["flops"])
        cells[(r["dataset"], r["arch"], r["method"])].append(
            (r["test_accuracy"], 100 * r["flops"] / base, r["seed"])
        )
    lines = [
        "| dataset | model | method | seeds | test acc. (%) | % of dense FLOPs |",
        "|---|---|---|---|---|---|",
    ]
    for (dataset, arch, method), rows in cells.items():
        acc, flops = np.array([a for a, _, _ in rows]) * 100, np.array([f for _, f, _ in rows])
        seeds = ",".join(str(s) for *_, s in sorted(rows, key=lambda x: x[2]))
        std = acc.std(ddof=1) if len(acc) > 1 else float("nan")
        lines.append(
            f"| {dataset} | {arch} | {method} | {seeds} | {acc.mean():.2f} ± {std:.2f} | "
            f"{flops.mean():.1f} |"
        )
    return "\n".join(lines)


def regimes(data: dict) -> str:
    cells = data["cells"]
    temp = lambda c: (c["temperature"]["epochs"], c["temperature"]["batch_size"])
    temps = []
    for c in cells:
        if temp(c) not in temps:
            temps.append(temp(c))
    densities = sorted({c["density"] for c in cells})
    head = "| density | " + " | ".join(f"{e} ep, batch {b}" for e, b in temps) + " |"
    lines = [head, "|---|" + "---|" * len(temps)]
    for d in densities:
        row = []
        for t in temps:
            c = next(c for c in cells if c["density"] == d and temp(c) == t)
            trace = f", tr H {c['hessian_trace']:.1f}" if c.get("hessian_trace") is not None else ""
            row.append(
                f"**{c['regime']}**: B {c['barrier']:.3f} (err {c['error_barrier']:.3f}), "
                f"CKA {c['cka']:.3f}, acc {c['accuracy']:.3f}{trace}"
            )
        lines.append(f"| {d:g} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    for path in sys.argv[1:]:
        data = json.loads(Path(path).read_text())
        print(regimes(data) if "cells" in data else polarization(data))
        print()
        if "runs" in data and len({r["seed"] for r in data["runs"]}) > 1:
            print(seeds_summary(data))
            print()


if __name__ == "__main__":
    main()
