"""The three-regime map of a small CNN on MNIST: load (density) × temperature (dense training's
epochs and batch size), with the loss barrier and CKA of every cell.

The reference protocol (Zhou et al. 2023, ``ThreeRegimePruning``'s ``write_experiments.py``): per
temperature **one dense model** (init seed 0, data order seed 0; ``Temperature.epochs`` epochs at
its batch size, Adam, cosine-decayed learning rate; more epochs and smaller batches are hotter);
per density it is pruned by magnitude **uniformly per layer** (every convolution kernel to the
same density; the head is not pruned, as the reference prunes ``Conv2d`` only) and **retrained
under several seeds** (``--seeds``, the data order; ``--retrain-epochs`` at batch
``--retrain-batch``, SGD with momentum 0.9 at ``--retrain-lr`` cosine-decayed, as the reference
retrains with SGD at 0.1, mask kept). The cell: the mean over every pair of retrained solutions of
the linear-path loss barrier (``--points`` points, BatchNorm recomputed on ``--bn-size`` training
images at every point) and of the linear CKA of their logits, their mean accuracy on
``--eval-size`` test images and the Hutchinson trace of the first solution's loss Hessian,
classified by :func:`jaxprune.analysis.classify` (collapsed first:
:func:`~jaxprune.analysis.collapsed`). ::

    python benchmarks/regimes.py --out benchmarks/results/regimes_cpu.json \
        --plot benchmarks/plots/regimes.png
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
import optax
import vision_common
from _common import write_json
from vision_common import adam_cosine

from jaxprune.analysis import Temperature, plot_regime_map, sweep
from jaxprune.core.masks import apply_masks, mask_per_layer
from jaxprune.core.paths import flat_leaves
from jaxprune.models.vision import VGGConfig, VisionModel
from jaxprune.training import keep_masks
from jaxprune.training.loop import ImageData, train

LR = 1e-3


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--densities", nargs="+", type=float, default=[0.05, 0.1, 0.3, 0.7])
    p.add_argument(
        "--temperatures", nargs="+", default=["1x256", "2x64", "4x16"],
        help="EPOCHSxBATCH of the dense training, coldest first",
    )  # fmt: skip
    p.add_argument("--widths", nargs="+", default=["8", "M", "16", "M", "32"])
    p.add_argument("--train-size", type=int, default=6000)
    p.add_argument("--eval-size", type=int, default=2000)
    p.add_argument("--bn-size", type=int, default=2000)
    p.add_argument("--retrain-epochs", type=int, default=1)
    p.add_argument("--retrain-batch", type=int, default=64)
    p.add_argument("--retrain-lr", type=float, default=0.1)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="retraining seeds")
    p.add_argument("--collapse-margin", type=float, default=0.1)
    p.add_argument("--points", type=int, default=11)
    p.add_argument("--barrier-tol", type=float, default=0.05)
    p.add_argument("--cka-threshold", type=float, default=0.95)
    p.add_argument("--hessian-samples", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/regimes_cpu.json"))
    p.add_argument("--plot", type=Path, default=None)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    data = ImageData.load(args.dataset)
    train_set = data.train.take(args.train_size, 0)
    test = data.test.take(args.eval_size, 0)
    model = VisionModel(VGGConfig(widths=tuple(w if w == "M" else int(w) for w in args.widths)))
    temps = [Temperature(*map(int, t.split("x"))) for t in args.temperatures]
    convs = [
        p for p in flat_leaves(model.init(0)[0]) if p.endswith("kernel") and p.startswith("convs/")
    ]

    @functools.cache
    def dense(temp: Temperature):
        steps = temp.epochs * (len(train_set) // temp.batch_size)
        run = train(model, *model.init(0), adam_cosine(LR, steps), train_set,
                    epochs=temp.epochs, batch_size=temp.batch_size, seed=0,
                    progress=False)  # fmt: skip
        return run.params, run.stats

    def solve(density: float, temp: Temperature, seed: int):
        params, stats = dense(temp)
        leaves = flat_leaves(params)
        masks = {p: mask_per_layer(np.abs(np.asarray(leaves[p])), 1.0 - density) for p in convs}
        pruned = apply_masks(params, masks)
        steps = args.retrain_epochs * (len(train_set) // args.retrain_batch)
        sgd = optax.sgd(optax.cosine_decay_schedule(args.retrain_lr, steps), momentum=0.9)
        run = train(model, pruned, stats, keep_masks(sgd, masks), train_set,
                    epochs=args.retrain_epochs, batch_size=args.retrain_batch, seed=seed,
                    progress=False)  # fmt: skip
        return model, run.params, run.stats

    start_wall, start_cpu = time.perf_counter(), time.process_time()
    rmap = sweep(
        args.densities, temps, solve, test.images, test.labels,
        bn_images=train_set.images[: args.bn_size], points=args.points, seeds=args.seeds,
        collapse_margin=args.collapse_margin,
        hessian_samples=args.hessian_samples, barrier_tol=args.barrier_tol,
        cka_threshold=args.cka_threshold, log=lambda line: print(line, flush=True),
    )  # fmt: skip
    out = {
        "machine": vision_common.machine(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "wall_s": time.perf_counter() - start_wall,
        "cpu_s": time.process_time() - start_cpu,
        **rmap.to_dict(),
    }
    write_json(args.out, out, indent=1)
    if args.plot is not None:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        title = f"{args.dataset}, CNN {' '.join(args.widths)}: three-regime map"
        plot_regime_map(rmap, title).savefig(args.plot, dpi=110)
    print(json.dumps({"cells": len(out["cells"]), "wall_s": out["wall_s"]}))


if __name__ == "__main__":
    main()
