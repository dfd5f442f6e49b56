"""Federated pruning on MNIST / Fashion-MNIST: FedTiny against dense FedAvg and sparse baselines.

One run per (dataset, Dirichlet α, seed, method, density): 100 clients from a Dirichlet(α) split
of a subsample of the training set, 10 sampled per round, one local epoch of SGD, FedAvg weighted
by example counts; test accuracy every ``--eval-every`` rounds on a test subsample; bytes up/down
per round and the client peak parameter memory (:mod:`jaxprune.federated.accounting`). Results go
to one JSON file, rewritten after each run; runs already in it are skipped (resumable).

FedTiny's candidates are random ERK masks by default, the random baseline's distribution (like
with like; ``--candidate-distributions erk uniform`` restores the first sweep's mixed pool), and
each trains ``--warmup-rounds`` FedAvg rounds before the selection (those rounds count against
``--rounds``). FedTiny runs also record ``gradient_step_memory``: XLA's memory analysis of the
simulation's growth-gradient step, which computes every leaf's dense gradient at once, beside the
analytic ``client_peak_bytes`` of a block-by-block client::

    python benchmarks/federated.py --out benchmarks/results/federated_cpu.json
    python benchmarks/federated.py --report benchmarks/results/federated_cpu.json   # table, plots
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from vision_common import Results

from jaxprune import federated as fl
from jaxprune.models.vision import VGGConfig, VisionModel
from jaxprune.training.loop import ImageData

KEY_FIELDS = ("dataset", "alpha", "seed", "method", "density")
SPARSE = ("fedtiny", "magnitude", "random")
WIDTHS = (8, "M", 16, "M", 32)


class FedResults(Results):
    """The vision benchmarks' resumable results file, keyed by :data:`KEY_FIELDS`."""

    @staticmethod
    def key(record: dict) -> tuple:
        return tuple(record.get(k) for k in KEY_FIELDS)


def run_one(model, data, args, dataset, alpha, seed, method, density) -> dict:
    train = data.train.take(args.train_size, seed=seed)
    test = data.test.take(args.test_size, seed=seed)
    clients = fl.dirichlet_split(train.labels, args.clients, alpha, seed=seed, min_size=2)
    config = fl.FedConfig(
        rounds=args.rounds,
        clients_per_round=args.per_round,
        local_epochs=1,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=seed,
        eval_every=args.eval_every,
        client_loop=args.client_loop,
    )
    tiny = fl.FedTinyConfig(
        candidates=2, alpha=args.swap_alpha, every=args.every,
        end=args.end or args.rounds * 2 // 3,
        distributions=tuple(args.candidate_distributions), warmup_rounds=args.warmup_rounds,
    )  # fmt: skip
    start, cpu = time.perf_counter(), time.process_time()
    result = fl.federated_train(
        model, train, clients, config, method, density, fedtiny_config=tiny, eval_set=test
    )
    history = result.history
    measured = None
    if method == "fedtiny":  # what the simulation's growth-gradient step holds (XLA's analysis)
        n = tiny.grad_batches * args.batch_size
        x = train.images[:n].reshape(tiny.grad_batches, args.batch_size, *train.images.shape[1:])
        y = train.labels[:n].reshape(tiny.grad_batches, args.batch_size)
        measured = fl.fedtiny.gradient_memory(model, *model.init(seed), x, y)
    return {
        "dataset": dataset,
        "alpha": alpha,
        "seed": seed,
        "method": method,
        "density": density,
        "final_accuracy": history[-1]["test_accuracy"],
        "achieved_density": history[-1]["density"],
        "bytes_up_total": sum(h["bytes_up"] for h in history),
        "bytes_down_total": sum(h["bytes_down"] for h in history),
        "client_peak_bytes": max(h["client_peak_bytes"] for h in history),
        "gradient_step_memory": measured,
        "selection": result.selection,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "history": history,
    }


def sweep(args) -> None:
    settings = {
        k: getattr(args, k)
        for k in (
            "rounds",
            "clients",
            "per_round",
            "batch_size",
            "lr",
            "train_size",
            "test_size",
            "swap_alpha",
            "every",
            "end",
            "eval_every",
        )
    } | {"model": list(WIDTHS)}
    if args.candidate_distributions != ["erk", "uniform"] or args.warmup_rounds:
        # Recorded only when they differ from the first sweep's (mixed candidates, no warm-up).
        settings |= {
            "candidate_distributions": args.candidate_distributions,
            "warmup_rounds": args.warmup_rounds,
        }
    results = FedResults(Path(args.out), settings)
    model = VisionModel(VGGConfig(widths=WIDTHS))
    for seed in args.seeds:
        for dataset in args.datasets:
            data = ImageData.load(dataset)
            for alpha in args.alphas:
                todo = [("dense", 1.0)] + [(m, d) for d in args.densities for m in SPARSE]
                todo = [(m, d) for m, d in todo if m in args.methods]
                for method, density in todo:
                    key = dict(dataset=dataset, alpha=alpha, seed=seed, method=method)
                    if results.has(**key, density=density):
                        continue
                    record = run_one(model, data, args, dataset, alpha, seed, method, density)
                    results.add(record)


def _cell(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "—"
    v = np.asarray(values) * scale
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def table(runs: list[dict]) -> str:
    densities = sorted({r["density"] for r in runs if r["method"] != "dense"}, reverse=True)
    methods = ("dense", *SPARSE)
    head = "| dataset | α | density | " + " | ".join(methods) + " |"
    lines = [head, "|" + "---|" * (3 + len(methods))]
    for dataset in sorted({r["dataset"] for r in runs}):
        for alpha in sorted({r["alpha"] for r in runs}):
            for d in densities:
                cells = []
                for m in methods:
                    want = 1.0 if m == "dense" else d
                    acc = [
                        r["final_accuracy"]
                        for r in runs
                        if (r["dataset"], r["alpha"], r["method"], r["density"])
                        == (dataset, alpha, m, want)
                    ]
                    cells.append(_cell(acc))
                lines.append(f"| {dataset} | {alpha} | {d:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(runs: list[dict]) -> str:
    lines = [
        "| method | density | MB up / run | MB down / run | client peak KB |",
        "|---|---|---|---|---|",
    ]
    seen = {}
    for r in runs:
        seen.setdefault((r["method"], r["density"]), []).append(r)
    for (m, d), rows in sorted(seen.items(), key=lambda x: (-x[0][1], x[0][0])):
        up = np.mean([r["bytes_up_total"] for r in rows]) / 1e6
        down = np.mean([r["bytes_down_total"] for r in rows]) / 1e6
        peak = np.mean([r["client_peak_bytes"] for r in rows]) / 1e3
        lines.append(f"| {m} | {d:.0%} | {up:.2f} | {down:.2f} | {peak:.1f} |")
    return "\n".join(lines)


def plot(runs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in runs})
    alphas = sorted({r["alpha"] for r in runs})
    densities = sorted({r["density"] for r in runs if r["method"] != "dense"}, reverse=True)
    panels = [(ds, a, d) for ds in datasets for a in alphas for d in densities]
    cols = len(alphas) * len(densities)
    fig, axes = plt.subplots(len(datasets), cols, figsize=(3.6 * cols, 3.0 * len(datasets)))
    axes = np.atleast_2d(axes)
    colors = {"dense": "k", "fedtiny": "C3", "magnitude": "C0", "random": "C2"}
    for i, (ds, a, d) in enumerate(panels):
        ax = axes[i // cols, i % cols]
        for m in ("dense", *SPARSE):
            rows = [
                r
                for r in runs
                if (r["dataset"], r["alpha"], r["method"]) == (ds, a, m)
                and r["density"] == (1.0 if m == "dense" else d)
            ]
            if not rows:
                continue
            rounds = [h["round"] for h in rows[0]["history"] if "test_accuracy" in h]
            acc = np.asarray(
                [[h["test_accuracy"] for h in r["history"] if "test_accuracy" in h] for r in rows]
            )
            std = acc.std(0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])
            mean, std = acc.mean(0) * 100, std * 100
            ax.plot(rounds, mean, color=colors[m], label=m, lw=1.4)
            ax.fill_between(rounds, mean - std, mean + std, color=colors[m], alpha=0.15)
        ax.set_title(f"{ds}, α={a}, density {d:.0%}", fontsize=9)
        ax.set_xlabel("round", fontsize=8)
        ax.set_ylabel("test accuracy (%)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/federated_cpu.json")
    p.add_argument("--report", help="print the tables of this results file and plot it")
    p.add_argument("--plot", default="benchmarks/plots/federated.png")
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    p.add_argument("--alphas", nargs="+", type=float, default=[0.1, 0.5])
    p.add_argument("--densities", nargs="+", type=float, default=[0.1, 0.05])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--swap-alpha", type=float, default=0.2)
    p.add_argument("--every", type=int, default=3)
    p.add_argument("--end", type=int, default=0, help="T_end (default 2/3 of the rounds)")
    p.add_argument("--eval-every", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=["dense", *SPARSE])
    p.add_argument(
        "--candidate-distributions", nargs="+", default=["erk"], choices=["erk", "uniform"],
        help="FedTiny's candidates (erk: the random baseline's distribution, like with like)",
    )  # fmt: skip
    p.add_argument("--warmup-rounds", type=int, default=2, help="candidates' FedAvg rounds")
    p.add_argument(
        "--client-loop", choices=["vmap", "map"], default="map", help="map is faster on CPU"
    )
    args = p.parse_args()
    if args.report:
        runs = json.loads(Path(args.report).read_text())["runs"]
        print(table(runs), "\n")
        print(cost_table(runs))
        plot(runs, Path(args.plot))
        return
    sweep(args)


if __name__ == "__main__":
    main()
