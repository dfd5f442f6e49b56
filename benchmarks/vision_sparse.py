"""Training-time sparsity on real images: dense, one-shot magnitude + fine-tune, GMP, RigL, SET,
and Rethinking's Scratch-E / Scratch-B for unstructured pruning — on an MLP (LeNet-300-100).

Per dataset and seed, every sparse run targets the same ERK distribution over the three kernels:

- ``dense``: ``--epochs`` epochs of Adam (cosine-decayed learning rate);
- ``oneshot``: the dense model pruned by magnitude (``OneShot(0)``), fine-tuned ``--ft-epochs``;
- ``gmp``: from scratch, Zhu & Gupta's cubic schedule from step 0 to 2/3 of the run, masks updated
  every 50 steps (fewer on tiny data);
- ``rigl`` / ``set``: from scratch at the target sparsity (random ERK masks), drop fraction 0.3
  cosine-decayed to 0 at 3/4 of the run, masks updated every 100 steps;
- ``scratch-e`` / ``scratch-b`` (at ``--rethink-sparsity``): the one-shot mask kept on a fresh
  initialisation, trained ``--epochs`` epochs (E) or ``--epochs`` × FLOPs ratio (B). The fresh
  init is the reference's (every masked kernel redrawn with std √(2/n), n its kept fan-out:
  :func:`jaxprune.training.scratch.fresh_masked_init`); ``--scratch-init dense`` masks the dense
  init instead (recorded as ``scratch-e-dense-init`` / ``scratch-b-dense-init``). The one-shot
  baseline trains ``--epochs`` dense + ``--ft-epochs``; Scratch-E trains ``--epochs`` in all,
  Scratch-B the same computation as the dense training.

    python benchmarks/vision_sparse.py --out benchmarks/results/vision_sparse_cpu.json
    python benchmarks/vision_sparse.py --datasets digits --seeds 0 --epochs 1 --out /tmp/s.json

Results go to ``--out`` after every run (see ``vision_common.Results``); rerunning resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from vision_common import Results, adam_cosine, epoch_seconds, timed, zero_fraction

from jaxprune.models.vision import MLPConfig, VisionModel
from jaxprune.training import (
    distributions,
    final_params,
    keep_masks,
    masks_of,
    schedules,
    sparse_training,
    updaters,
)
from jaxprune.training.loop import ImageData, evaluate, train
from jaxprune.training.scratch import INITS, fresh_masked_init, scratch_b_epochs

LR = 1e-3


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.8, 0.9, 0.95])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--ft-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rethink-sparsity", type=float, default=0.9)
    p.add_argument("--scratch-init", default="reference", choices=INITS)
    p.add_argument("--hidden", nargs="+", type=int, default=[300, 100])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/vision_sparse_cpu.json"))
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/jaxprune-vision-sparse"))
    return p.parse_args()


def record(results, data, seed, method, sparsity, epochs, run, wall, cpu, model, params, paths):
    steps = run.steps
    results.add(
        {
            "dataset": data.name,
            "seed": seed,
            "method": method,
            "sparsity": sparsity,
            "model": model.to_dict(),
            "epochs": epochs,
            "steps": steps,
            "test_accuracy": evaluate(model, params, run.stats, data.test),
            "zero_fraction": zero_fraction(params, paths),
            "flops": model.flops(params if sparsity else None),
            "wall_s": wall,
            "cpu_s": cpu,
        }
    )


def sparse_run(args, data, model, seed, method, sparsity, start, epochs, results, paths):
    steps = epochs * (len(data.train) // args.batch_size)
    targets = distributions.erk(start[0], sparsity)
    if method == "oneshot":
        updater, schedule = updaters.magnitude(), schedules.OneShot(0)
    elif method == "gmp":
        every = max(1, min(50, steps // 20))
        end = (2 * steps // 3) // every * every
        updater, schedule = updaters.magnitude(), schedules.gmp(0, end, every)
    else:
        end = 3 * steps // 4
        make = updaters.rigl if method == "rigl" else updaters.set_
        updater, schedule = make(0.3, decay_steps=end), schedules.Periodic(100, 0, end)
    tx = sparse_training(adam_cosine(LR, steps), targets, updater, schedule, seed=seed)
    run, wall, cpu = timed(
        train,
        model,
        *start,
        tx,
        data.train,
        epochs=epochs,
        batch_size=args.batch_size,
        seed=seed,
        progress=False,
    )
    params = final_params(run.params, run.opt_state)
    record(results, data, seed, method, sparsity, epochs, run, wall, cpu, model, params, paths)
    return run


def scratch_runs(args, data, model, seed, masks, results, paths):
    sparsity = args.rethink_sparsity
    dense_flops = model.flops()
    fresh, stats = fresh_masked_init(model, masks, seed + 1000, args.scratch_init)
    suffix = "" if args.scratch_init == "reference" else f"-{args.scratch_init}-init"
    budgets = {
        f"scratch-e{suffix}": args.epochs,
        f"scratch-b{suffix}": scratch_b_epochs(args.epochs, dense_flops, model.flops(fresh)),
    }
    for method, epochs in budgets.items():
        if results.has(dataset=data.name, seed=seed, method=method, sparsity=sparsity):
            continue
        steps = epochs * (len(data.train) // args.batch_size)
        tx = keep_masks(adam_cosine(LR, steps), masks)
        run, wall, cpu = timed(
            train,
            model,
            fresh,
            stats,
            tx,
            data.train,
            epochs=epochs,
            batch_size=args.batch_size,
            seed=seed,
            progress=False,
        )
        record(
            results, data, seed, method, sparsity, epochs, run, wall, cpu, model, run.params, paths
        )


def main() -> None:
    args = parse_args()
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings = {
        k: v
        for k, v in settings.items()
        if k not in ("out", "work_dir", "datasets", "seeds", "scratch_init")
    }
    results = Results(args.out, settings)
    for name in args.datasets:
        data = ImageData.load(name)
        size = data.train.images.shape[1]
        model = VisionModel(MLPConfig(hidden=tuple(args.hidden), image_size=size))
        for seed in args.seeds:
            init = model.init(seed)
            paths = list(distributions.erk(init[0], 0.5))
            steps = args.epochs * (len(data.train) // args.batch_size)
            ckpt = args.work_dir / f"dense-{name}-{seed}"
            dense, _, _ = timed(
                train,
                model,
                *init,
                adam_cosine(LR, steps),
                data.train,
                epochs=args.epochs,
                batch_size=args.batch_size,
                seed=seed,
                checkpoint_dir=ckpt,
                resume=True,
                progress=False,
            )
            # Timed from the checkpointed per-epoch history: a resumed run did not train.
            wall, cpu = epoch_seconds(dense.history)
            if not results.has(dataset=name, seed=seed, method="dense", sparsity=0.0):
                record(
                    results,
                    data,
                    seed,
                    "dense",
                    0.0,
                    args.epochs,
                    dense,
                    wall,
                    cpu,
                    model,
                    dense.params,
                    paths,
                )
            for sparsity in args.sparsities:
                for method in ("oneshot", "gmp", "rigl", "set"):
                    if results.has(dataset=name, seed=seed, method=method, sparsity=sparsity):
                        continue
                    oneshot = method == "oneshot"
                    start = (dense.params, dense.stats) if oneshot else init
                    epochs = args.ft_epochs if oneshot else args.epochs
                    sparse_run(
                        args, data, model, seed, method, sparsity, start, epochs, results, paths
                    )
            masks = oneshot_masks(dense.params, args.rethink_sparsity)
            scratch_runs(args, data, model, seed, masks, results, paths)


def oneshot_masks(params, sparsity: float) -> dict:
    """The masks the ``oneshot`` run prunes with: magnitude at step 0 over ERK targets."""
    targets = distributions.erk(params, sparsity)
    tx = sparse_training(optax.identity(), targets, updaters.magnitude(), schedules.OneShot(0))
    state = tx.init(params)
    _, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    return masks_of(state)


if __name__ == "__main__":
    main()
