"""Tables (Markdown) and plots (PNG) from the vision benchmarks' JSON results.

    python benchmarks/vision_report.py benchmarks/results/vision_sparse_cpu.json \
        benchmarks/results/vision_structured_cpu.json --plots benchmarks/plots

Every cell is the mean ± standard deviation (``ddof=1``) over the seeds present, with their
number; CPU seconds are process CPU time (all threads), compilation included. Needs matplotlib
for ``--plots`` (``pip install jaxprune[plots]``).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

DATASETS = ("mnist", "fashion-mnist")
SPARSE_METHODS = ("oneshot", "gmp", "rigl", "set")
FILTER_METHODS = ("l1", "beta-rank", "hrank", "beta-rank-ref", "beta-rank-ref-slice")
LABELS = {
    "dense": "dense",
    "oneshot": "one-shot magnitude + fine-tune",
    "gmp": "GMP (cubic, from scratch)",
    "rigl": "RigL",
    "set": "SET",
    "l1": "L1-norm",
    "beta-rank": "Beta-Rank (σ_in/σ_out, paper)",
    "beta-rank-ref": "Beta-Rank (σ_out/σ_in, reference code)",
    "beta-rank-ref-slice": "Beta-Rank (reference code: ratio, NCHW slice, one batch)",
    "hrank": "HRank",
    "scratch-e": "Scratch-E",
    "scratch-b": "Scratch-B",
    "scratch-e-dense-init": "Scratch-E, dense init masked",
    "scratch-b-dense-init": "Scratch-B, dense init masked",
}
SCRATCH = ("scratch-e", "scratch-b", "scratch-e-dense-init", "scratch-b-dense-init")


def load(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    runs, headers = [], []
    for path in paths:
        data = json.loads(path.read_text())
        headers.append(
            {"file": str(path), "machine": data["machine"], "settings": data["settings"]}
        )
        runs += [{**r, "source": path.stem} for r in data["runs"]]
    return runs, headers


def grouped(runs: list[dict], source: str, field: str = "test_accuracy") -> dict:
    out: dict = defaultdict(list)
    for r in runs:
        if r["source"] == source and r.get(field) is not None:
            out[(r["dataset"], r["method"], r["sparsity"])].append(r)
    return out


def cell(rows: list[dict], field: str = "test_accuracy", scale: float = 100.0) -> str:
    if not rows:
        return "–"
    values = np.asarray([r[field] for r in rows], np.float64) * scale
    spread = f" ± {values.std(ddof=1):.2f}" if len(values) > 1 else ""
    return f"{values.mean():.2f}{spread} ({len(values)})"


def seconds(rows: list[dict]) -> str:
    return f"{np.mean([r['cpu_s'] for r in rows]):.0f}" if rows else "–"


def sparse_table(runs: list[dict], source: str) -> str:
    groups = grouped(runs, source)
    sparsities = sorted({k[2] for k in groups if k[1] in SPARSE_METHODS})
    head = "| dataset | method | epochs | " + " | ".join(f"{s:.0%}" for s in sparsities)
    lines = [head + " | CPU s per run |", "|---" * (len(sparsities) + 4) + "|"]
    for dataset in DATASETS:
        dense = groups.get((dataset, "dense", 0.0), [])
        if dense:
            lines.append(
                f"| {dataset} | dense | {dense[0]['epochs']} | "
                + " | ".join(cell(dense) for _ in sparsities)
                + f" | {seconds(dense)} |"
            )
        for method in SPARSE_METHODS:
            rows = [groups.get((dataset, method, s), []) for s in sparsities]
            if not any(rows):
                continue
            epochs = next(r for r in rows if r)[0]["epochs"]
            every = [r for rs in rows for r in rs]
            lines.append(
                f"| {dataset} | {LABELS[method]} | {epochs} | "
                + " | ".join(cell(r) for r in rows)
                + f" | {seconds(every)} |"
            )
    return "\n".join(lines)


def scratch_label(method: str, pruning: str) -> str:
    """An unstructured scratch run names its init (``vision_sparse.py --scratch-init``); a
    structured one is the smaller model's own fresh init."""
    if pruning == "unstructured" and method in ("scratch-e", "scratch-b"):
        return f"{LABELS[method]}, reference init"
    return LABELS[method]


def rethinking_table(runs: list[dict], source: str, finetune: str, label: str) -> str:
    groups = grouped(runs, source)
    lines = [
        "| dataset | pruning | method | epochs | test accuracy % | MACs per image | CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset in DATASETS:
        keys = [k for k in groups if k[0] == dataset and k[1] in SCRATCH]
        for sparsity in sorted({k[2] for k in keys}):
            for method in (finetune, *SCRATCH):
                rows = groups.get((dataset, method, sparsity), [])
                if not rows:
                    continue
                name = scratch_label(method, label) if method != finetune else "prune + fine-tune"
                epochs = rows[0]["epochs"]
                if method == finetune:
                    dense = groups.get((dataset, "dense", 0.0), [{}])[0].get("epochs", "?")
                    epochs = f"{dense} + {epochs}"
                lines.append(
                    f"| {dataset} | {label} {sparsity:.0%} | {name} | {epochs} | {cell(rows)} | "
                    f"{int(np.mean([r['flops'] for r in rows])):,} | {seconds(rows)} |"
                )
    return "\n".join(lines)


def filter_table(runs: list[dict], source: str) -> str:
    groups = grouped(runs, source)
    lines = [
        "| dataset | filters removed | method | MACs per image | pruned, no fine-tune % | "
        "fine-tuned % | score s | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset in DATASETS:
        dense = groups.get((dataset, "dense", 0.0), [])
        if dense:
            lines.append(
                f"| {dataset} | 0% | dense | {dense[0]['flops']:,} | – | {cell(dense)} | – | "
                f"{seconds(dense)} |"
            )
        for fraction in sorted(
            {k[2] for k in groups if k[0] == dataset and k[1] in FILTER_METHODS}
        ):
            for method in FILTER_METHODS:
                rows = groups.get((dataset, method, fraction), [])
                if not rows:
                    continue
                lines.append(
                    f"| {dataset} | {fraction:.0%} | {LABELS[method]} | {rows[0]['flops']:,} | "
                    f"{cell(rows, 'pruned_accuracy')} | {cell(rows)} | "
                    f"{np.mean([r['score_s'] for r in rows]):.1f} | {seconds(rows)} |"
                )
    return "\n".join(lines)


def imbalanced_table(runs: list[dict], source: str) -> str:
    """Filter pruning on class-imbalanced training data: overall and minority-class accuracy."""
    groups = grouped(runs, source)
    lines = [
        "| dataset | filters removed | method | pruned, no fine-tune % | fine-tuned % | "
        "minority classes, fine-tuned % |",
        "|---|---|---|---|---|---|",
    ]
    for dataset in sorted({k[0] for k in groups}):
        dense = groups.get((dataset, "dense", 0.0), [])
        if dense:
            lines.append(
                f"| {dataset} | 0% | dense | – | {cell(dense)} | "
                f"{cell(dense, 'minority_accuracy')} |"
            )
        for fraction in sorted({k[2] for k in groups if k[0] == dataset and k[2] > 0}):
            for method in FILTER_METHODS:
                rows = groups.get((dataset, method, fraction), [])
                if rows:
                    lines.append(
                        f"| {dataset} | {fraction:.0%} | {LABELS[method]} | "
                        f"{cell(rows, 'pruned_accuracy')} | {cell(rows)} | "
                        f"{cell(rows, 'minority_accuracy')} |"
                    )
    return "\n".join(lines)


def plots(runs: list[dict], sources: dict[str, str], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "sparse" in sources:
        groups = grouped(runs, sources["sparse"])
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, dataset in zip(axes, DATASETS, strict=True):
            _sparse_panel(ax, groups, dataset)
        fig.tight_layout()
        written.append(_save(fig, out / "sparse_training.png", plt))
    if "structured" in sources:
        groups = grouped(runs, sources["structured"])
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, dataset in zip(axes, DATASETS, strict=True):
            _filter_panel(ax, groups, dataset)
        fig.tight_layout()
        written.append(_save(fig, out / "filter_pruning.png", plt))
    if {"sparse", "structured"} <= set(sources):
        fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
        for ax, dataset in zip(axes, DATASETS, strict=True):
            _rethinking_panel(ax, runs, sources, dataset)
        fig.tight_layout()
        written.append(_save(fig, out / "rethinking.png", plt))
    return written


def _save(fig, path: Path, plt) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mean_std(rows: list[dict], field: str = "test_accuracy"):
    values = np.asarray([r[field] for r in rows]) * 100
    return values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0


def _sparse_panel(ax, groups, dataset: str) -> None:
    for method in SPARSE_METHODS:
        points = sorted(
            (s, _mean_std(rows))
            for (d, m, s), rows in groups.items()
            if (d, m) == (dataset, method)
        )
        if points:
            xs = [p[0] * 100 for p in points]
            ax.errorbar(xs, [p[1][0] for p in points], [p[1][1] for p in points], marker="o",
                        capsize=3, label=LABELS[method])  # fmt: skip
    dense = groups.get((dataset, "dense", 0.0))
    if dense:
        ax.axhline(_mean_std(dense)[0], color="k", ls="--", lw=1, label="dense")
    ax.set(title=f"{dataset}: MLP 300-100, ERK targets", xlabel="sparsity %",
           ylabel="test accuracy %")  # fmt: skip
    ax.legend(fontsize=8)


def _filter_panel(ax, groups, dataset: str) -> None:
    for method in FILTER_METHODS:
        points = sorted(
            (rows[0]["flops"], _mean_std(rows), _mean_std(rows, "pruned_accuracy")[0])
            for (d, m, _), rows in groups.items()
            if (d, m) == (dataset, method)
        )
        if points:
            xs = [p[0] / 1e6 for p in points]
            line = ax.errorbar(xs, [p[1][0] for p in points], [p[1][1] for p in points],
                               marker="o", capsize=3, label=f"{LABELS[method]}")  # fmt: skip
            ax.plot(xs, [p[2] for p in points], ls=":", marker="x", color=line[0].get_color())
    dense = groups.get((dataset, "dense", 0.0))
    if dense:
        ax.axhline(_mean_std(dense)[0], color="k", ls="--", lw=1, label="dense")
    ax.set(title=f"{dataset}: VGG-style CNN (solid: fine-tuned, dotted: before)",
           xlabel="MMACs per image", ylabel="test accuracy %")  # fmt: skip
    ax.legend(fontsize=7)


def _rethinking_panel(ax, runs, sources, dataset: str) -> None:
    bars = []
    for source, finetune, label in (
        (sources["structured"], "l1", "structured"),
        (sources["sparse"], "oneshot", "unstructured"),
    ):
        groups = grouped(runs, source)
        for sparsity in sorted({k[2] for k in groups if k[0] == dataset and k[1] == "scratch-e"}):
            for method in (finetune, *SCRATCH):
                rows = groups.get((dataset, method, sparsity), [])
                if rows:
                    name = "fine-tune" if method == finetune else scratch_label(method, label)
                    colour = (
                        "C0"
                        if method == finetune
                        else "C1"
                        if method.startswith("scratch-e")
                        else "C2"
                    )
                    hatch = "//" if method.endswith("dense-init") else ""
                    bars.append(
                        (f"{label} {sparsity:.0%}: {name}", *_mean_std(rows), colour, hatch)
                    )
    if bars:
        for i, (_, mean, std, colour, hatch) in enumerate(bars):
            ax.bar(i, mean, yerr=std, capsize=3, color=colour, hatch=hatch, edgecolor="white")
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=7, rotation=35, ha="right")
        low = min(b[1] - b[2] for b in bars)
        ax.set_ylim(max(0.0, low - 2.0), 100.0)
    ax.set(title=f"{dataset}: inherited weights vs scratch", ylabel="test accuracy %")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--plots", type=Path, default=None)
    args = p.parse_args()
    runs, headers = load(args.results)
    sources = {}
    for h in headers:
        stem = Path(h["file"]).stem
        kind = "sparse" if "sparse" in stem else "structured"
        sources["imbalanced" if "imbalanced" in stem else kind] = stem
        print(f"<!-- {h['file']}: {json.dumps(h['machine'])} {json.dumps(h['settings'])} -->")
    if "sparse" in sources:
        print(sparse_table(runs, sources["sparse"]), "\n")
        print(rethinking_table(runs, sources["sparse"], "oneshot", "unstructured"), "\n")
    if "structured" in sources:
        print(filter_table(runs, sources["structured"]), "\n")
        print(rethinking_table(runs, sources["structured"], "l1", "structured"), "\n")
    if "imbalanced" in sources:
        print(imbalanced_table(runs, sources["imbalanced"]), "\n")
    if args.plots is not None:
        for path in plots(runs, sources, args.plots):
            print(f"<!-- wrote {path} -->")


if __name__ == "__main__":
    main()
