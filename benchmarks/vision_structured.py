"""Filter pruning of a VGG-style CNN on real images: Beta-Rank vs L1 vs HRank, and Rethinking's
Scratch-E / Scratch-B for structured pruning.

Per dataset and seed:

- ``dense``: the CNN trained ``--epochs`` epochs (Adam, cosine-decayed learning rate);
- ``l1``, ``beta-rank`` (σ_in/σ_out, the paper's ratio), ``hrank``, and ``beta-rank-ref``
  (σ_out/σ_in, the reference code's ratio; at ``--ref-fractions`` only): the same fraction of
  every convolution's filters removed by each score (calibration: ``--calib`` training images),
  the model physically shrunk, accuracy taken right after pruning (``pruned_accuracy``) and
  after ``--ft-epochs`` of fine-tuning;
- ``beta-rank-ref-slice``: the reference code's whole recipe (σ_out/σ_in over its NCHW slice,
  channels × rows, unpadded, from one calibration batch of ``--ref-batch`` images; see
  :mod:`jaxprune.structured.beta_rank`), at ``--ref-fractions`` only;
- ``scratch-e`` / ``scratch-b``: the architecture L1 pruning gives at ``--rethink-fraction``,
  re-initialised and trained ``--epochs`` epochs (E) or ``--epochs`` × FLOPs ratio (B)
  (``--no-scratch`` skips them).

``--imbalance F`` trains on a class-imbalanced training set (Beta-Rank's headline setting): the
classes ``--minority`` keep a fraction ``F`` of their examples
(:meth:`jaxprune.training.loop.Split.imbalanced`); the dataset is recorded as ``NAME-imbF`` and
every run also records ``minority_accuracy``, the accuracy on the minority classes' test images.

    python benchmarks/vision_structured.py --out benchmarks/results/vision_structured_cpu.json

Results go to ``--out`` after every run (see ``vision_common.Results``); rerunning resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from vision_common import Results, adam_cosine, epoch_seconds, timed

from jaxprune.models.vision import VGGConfig, VisionModel
from jaxprune.structured import beta_rank, filters
from jaxprune.training.loop import ImageData, Split, evaluate, train
from jaxprune.training.scratch import scratch_b_epochs

LR = 1e-3


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--fractions", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    p.add_argument("--methods", nargs="+", default=["l1", "beta-rank", "hrank", "beta-rank-ref"])
    p.add_argument(
        "--ref-fractions", nargs="+", type=float, default=[0.5],
        help="fractions at which beta-rank-ref (the reference code's ratio) runs",
    )  # fmt: skip
    p.add_argument("--widths", nargs="+", default=["8", "M", "16", "M", "32"])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--ft-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--calib", type=int, default=512)
    p.add_argument("--rethink-fraction", type=float, default=0.5)
    p.add_argument("--no-scratch", action="store_true")
    p.add_argument("--ref-batch", type=int, default=256, help="beta-rank-ref-slice's one batch")
    p.add_argument("--imbalance", type=float, default=None, help="minority classes' fraction")
    p.add_argument("--minority", nargs="+", type=int, default=[5, 6, 7, 8, 9])
    p.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/vision_structured_cpu.json")
    )
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/jaxprune-vision-structured"))
    return p.parse_args()


REFERENCE_ONLY = ("beta-rank-ref", "beta-rank-ref-slice")


def scores_for(method, model, params, stats, calib, ref_batch):
    if method == "l1":
        return filters.l1_scores(model, params)
    if method == "hrank":
        return beta_rank.hrank_scores(model, params, stats, calib)
    if method == "beta-rank-ref-slice":
        return beta_rank.beta_rank_scores(
            model, params, stats, calib, ratio="reference", slicing="reference",
            batch_size=ref_batch,
        )  # fmt: skip
    ratio = "reference" if method == "beta-rank-ref" else "paper"
    return beta_rank.beta_rank_scores(model, params, stats, calib, ratio=ratio)


def minority_accuracy(args, model, params, stats, test) -> float | None:
    if args.imbalance is None:
        return None
    keep = np.isin(test.labels, args.minority)
    return evaluate(model, params, stats, Split(test.images[keep], test.labels[keep]))


def finetune_run(args, results, data, seed, method, fraction, dense, model, scores, score_s):
    pruned = filters.prune_filters(model, dense.params, dense.stats, scores, fraction)
    steps = args.ft_epochs * (len(data.train) // args.batch_size)
    run, wall, cpu = timed(
        train,
        pruned.model,
        pruned.params,
        pruned.stats,
        adam_cosine(LR, steps),
        data.train,
        epochs=args.ft_epochs,
        batch_size=args.batch_size,
        seed=seed,
        progress=False,
    )
    results.add(
        {
            "dataset": data.name,
            "seed": seed,
            "method": method,
            "sparsity": fraction,
            "model": pruned.model.to_dict(),
            "epochs": args.ft_epochs,
            "steps": run.steps,
            "pruned_accuracy": evaluate(pruned.model, pruned.params, pruned.stats, data.test),
            "test_accuracy": evaluate(pruned.model, run.params, run.stats, data.test),
            "minority_accuracy": minority_accuracy(
                args, pruned.model, run.params, run.stats, data.test
            ),
            "flops": pruned.flops,
            "flops_dense": pruned.flops_dense,
            "params": pruned.model.num_params(),
            "score_s": score_s,
            "wall_s": wall,
            "cpu_s": cpu,
        }
    )


def scratch_runs(args, results, data, seed, dense, model):
    scores = filters.l1_scores(model, dense.params)
    small = filters.prune_filters(model, dense.params, dense.stats, scores, args.rethink_fraction)
    budgets = {
        "scratch-e": args.epochs,
        "scratch-b": scratch_b_epochs(args.epochs, small.flops_dense, small.flops),
    }
    for method, epochs in budgets.items():
        if results.has(dataset=data.name, seed=seed, method=method, sparsity=args.rethink_fraction):
            continue
        steps = epochs * (len(data.train) // args.batch_size)
        run, wall, cpu = timed(
            train,
            small.model,
            *small.model.init(seed + 1000),
            adam_cosine(LR, steps),
            data.train,
            epochs=epochs,
            batch_size=args.batch_size,
            seed=seed,
            progress=False,
        )
        results.add(
            {
                "dataset": data.name,
                "seed": seed,
                "method": method,
                "sparsity": args.rethink_fraction,
                "model": small.model.to_dict(),
                "epochs": epochs,
                "steps": run.steps,
                "test_accuracy": evaluate(small.model, run.params, run.stats, data.test),
                "flops": small.flops,
                "flops_dense": small.flops_dense,
                "params": small.model.num_params(),
                "wall_s": wall,
                "cpu_s": cpu,
            }
        )


def main() -> None:
    args = parse_args()
    skip = ("out", "work_dir", "datasets", "seeds", "methods", "no_scratch", "ref_batch")
    # Balanced runs keep the settings of files written before --imbalance existed.
    skip += ("imbalance", "minority") if args.imbalance is None else ()
    settings = {k: v for k, v in vars(args).items() if k not in skip}
    results = Results(args.out, settings)
    widths = tuple(w if w == "M" else int(w) for w in args.widths)
    datasets = {}
    for name in args.datasets:
        data = ImageData.load(name)
        if args.imbalance is not None:
            name = f"{name}-imb{args.imbalance:g}"
            train_set = data.train.imbalanced(args.minority, args.imbalance, seed=0)
            data = dataclasses.replace(data, train=train_set, name=name)
        datasets[name] = data
    # Seeds outermost: an interrupted sweep still has every dataset for the seeds it finished.
    for seed in args.seeds:
        for name, data in datasets.items():
            model = VisionModel(VGGConfig(widths=widths, image_size=data.train.images.shape[1]))
            steps = args.epochs * (len(data.train) // args.batch_size)
            dense, _, _ = timed(
                train,
                model,
                *model.init(seed),
                adam_cosine(LR, steps),
                data.train,
                epochs=args.epochs,
                batch_size=args.batch_size,
                seed=seed,
                checkpoint_dir=args.work_dir / f"dense-{name}-{seed}",
                resume=True,
                progress=False,
            )
            # Timed from the checkpointed per-epoch history: a resumed run did not train.
            wall, cpu = epoch_seconds(dense.history)
            if not results.has(dataset=name, seed=seed, method="dense", sparsity=0.0):
                results.add(
                    {
                        "dataset": name, "seed": seed, "method": "dense", "sparsity": 0.0,
                        "model": model.to_dict(), "epochs": args.epochs, "steps": dense.steps,
                        "test_accuracy": evaluate(model, dense.params, dense.stats, data.test),
                        "minority_accuracy": minority_accuracy(
                            args, model, dense.params, dense.stats, data.test),
                        "flops": model.flops(), "params": model.num_params(),
                        "wall_s": wall, "cpu_s": cpu,
                    }
                )  # fmt: skip
            if not args.no_scratch:
                scratch_runs(args, results, data, seed, dense, model)
            calib = data.train.take(args.calib, seed).images
            for method in args.methods:
                fractions = args.ref_fractions if method in REFERENCE_ONLY else args.fractions
                todo = [
                    f for f in fractions
                    if not results.has(dataset=name, seed=seed, method=method, sparsity=f)
                ]  # fmt: skip
                if not todo:
                    continue
                scores, score_s, _ = timed(scores_for, method, model, dense.params, dense.stats,
                                           calib, args.ref_batch)  # fmt: skip
                for fraction in todo:
                    finetune_run(
                        args, results, data, seed, method, fraction, dense, model, scores, score_s
                    )


if __name__ == "__main__":
    main()
