"""Polarization (one training pass with channel gates) vs L1 filter pruning + fine-tuning, at
equal FLOPs and equal total epochs, on MNIST / Fashion-MNIST with a small CNN and a ResNet.

Per dataset, architecture and seed (training set subsampled to ``--train-size`` images):

- ``dense``: the network trained ``--epochs`` epochs (Adam, cosine-decayed learning rate);
- ``polarization``: the gated network (:mod:`jaxprune.structured.gates`) trained ``--epochs``
  epochs with the budget (target ``--density`` of channels) and polarizing penalties, then
  exported in one call: the test accuracy is the exported model's, with no fine-tuning;
- ``l1-ft``: the network trained ``--epochs − --ft-epochs`` epochs, the same fraction of every
  group's filters removed by L1 norm — the fraction whose FLOPs come closest to the polarized
  model's — and fine-tuned ``--ft-epochs`` epochs (same total epochs);
- ``bn-polar``: Zhuang et al.'s BatchNorm-γ polarization regulariser
  (:func:`jaxprune.structured.gates.bn_polarization`, ``--bn-t``, ``--bn-strength``) on the plain
  network for ``--epochs`` epochs, the γ threshold whose FLOPs come closest to the polarized
  model's, the channels below it removed (:func:`~jaxprune.structured.gates.bn_keep`) with their
  β constants folded into the next layer (:func:`~jaxprune.structured.bn_export.bn_export`), no
  fine-tuning;
- ``bn-polar-ref``: the reference's variant (γ start at 0.5 and are clamped to [0, 1] after every
  step; ``--epochs − --ft-epochs`` epochs with the regulariser, the channels removed as the
  reference does, γ and β alike, then ``--ft-epochs`` of fine-tuning: equal total epochs).

  The BatchNorm scales get their own Adam learning rate (``--bn-lr``): at the weights'
  1e-3, a few hundred cosine-decayed steps move a γ by at most ~0.2 from its initial 1, too little
  to reach 0 (the gates have ``--gate-lr`` for the same reason).

Every run records its test accuracy, FLOPs and training time (wall and process CPU seconds);
``polarization`` also keeps the final gate values σ(logit) for the histogram
(``--plot``)::

    python benchmarks/polarization.py --out benchmarks/results/polarization_cpu.json \
        --plot benchmarks/plots/polarization_gates.png

Results go to ``--out`` after every run; rerunning resumes (see ``vision_common.Results``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np
import optax
import vision_common
from vision_common import adam_cosine, timed

from jaxprune.core.paths import flat_leaves
from jaxprune.models.vision import ResNetConfig, VGGConfig, VisionModel
from jaxprune.structured import bn_export, filters, gates
from jaxprune.training.loop import ImageData, evaluate, train

LR = 1e-3
METHODS = ("dense", "polarization", "l1-ft", "bn-polar", "bn-polar-ref")
# Per-method hyperparameters: recorded in each run, not in the file's shared settings.
METHOD_ARGS = ("methods", "bn_t", "bn_strength", "bn_lr")
ARCHS = {
    "cnn": lambda size: VGGConfig(widths=(16, "M", 32, "M", 64), image_size=size),
    "resnet": lambda size: ResNetConfig(widths=(8, 16, 32), blocks=1, image_size=size),
}


class Results(vision_common.Results):
    @staticmethod
    def key(record):
        return tuple(record.get(k) for k in ("dataset", "arch", "seed", "method"))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    p.add_argument("--archs", nargs="+", default=["cnn", "resnet"], choices=sorted(ARCHS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--ft-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--density", type=float, default=0.5, help="target fraction of channels kept")
    p.add_argument("--budget", type=float, default=20.0)
    p.add_argument("--polarize", type=float, default=5.0)
    p.add_argument("--gate-lr", type=float, default=0.05)
    p.add_argument("--gate-init", type=float, default=2.0)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--bn-t", type=float, default=1.2, help="t of the γ polarization regulariser")
    p.add_argument("--bn-strength", type=float, default=1e-2, help="its λ")
    p.add_argument("--bn-lr", type=float, default=0.02, help="Adam learning rate of the γ")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/polarization_cpu.json"))
    p.add_argument("--plot", type=Path, default=None)
    return p.parse_args()


def record(data, arch, seed, method, model, params, stats, run_s, **extra):
    return {
        "dataset": data.name, "arch": arch, "seed": seed, "method": method,
        "test_accuracy": evaluate(model, params, stats, data.test),
        "flops": model.flops(), "params": model.num_params(),
        "wall_s": run_s[0], "cpu_s": run_s[1], "model": model.to_dict(), **extra,
    }  # fmt: skip


def dense_run(args, data, train_set, arch, seed, model):
    steps = args.epochs * (len(train_set) // args.batch_size)
    run, wall, cpu = timed(
        train, model, *model.init(seed), adam_cosine(LR, steps), train_set,
        epochs=args.epochs, batch_size=args.batch_size, seed=seed, progress=False,
    )  # fmt: skip
    return record(data, arch, seed, "dense", model, run.params, run.stats, (wall, cpu))


def polarization_run(args, data, train_set, arch, seed, model):
    gated = gates.GatedModel(model)
    steps = args.epochs * (len(train_set) // args.batch_size)
    penalty = lambda p: gates.gate_penalty(p["gates"], args.density, args.budget, args.polarize)
    tx = optax.chain(
        gates.add_penalty_gradient(penalty),
        gates.gate_optimizer(adam_cosine(LR, steps), optax.adam(args.gate_lr)),
    )
    params, stats = gated.init(seed, logit=args.gate_init)

    def one_pass():
        run = train(gated, params, stats, tx, train_set, epochs=args.epochs,
                    batch_size=args.batch_size, seed=seed, progress=False)  # fmt: skip
        return run, gates.export(gated, run.params, run.stats)

    (run, result), wall, cpu = timed(one_pass)
    soft = {k: np.asarray(jax.nn.sigmoid(v)).tolist() for k, v in run.params["gates"].items()}
    return record(
        data, arch, seed, "polarization", result.model, result.params, result.stats, (wall, cpu),
        gated_accuracy=evaluate(gated, run.params, run.stats, data.test),
        flops_dense=result.flops_dense, gates=soft,
        density=sum(int(k.sum()) for k in result.keep.values())
        / sum(k.size for k in result.keep.values()),
    )  # fmt: skip


def fraction_for_flops(model: VisionModel, target: int) -> float:
    """The uniform filter fraction whose L1-pruned FLOPs come closest to ``target``."""
    groups = model.channel_groups()
    best, best_gap = 0.0, None
    for f in np.linspace(0.0, 0.95, 96):
        widths = {g.name: g.size - min(int(f * g.size), g.size - 1) for g in groups}
        gap = abs(model.with_widths(widths).flops() - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = float(f), gap
    return best


def l1_run(args, data, train_set, arch, seed, model, target_flops):
    fraction = fraction_for_flops(model, target_flops)
    first = args.epochs - args.ft_epochs
    per_epoch = len(train_set) // args.batch_size

    def pipeline():
        dense = train(
            model,
            *model.init(seed),
            adam_cosine(LR, first * per_epoch),
            train_set,
            epochs=first,
            batch_size=args.batch_size,
            seed=seed,
            progress=False,
        )
        scores = filters.l1_scores(model, dense.params)
        pruned = filters.prune_filters(model, dense.params, dense.stats, scores, fraction)
        run = train(pruned.model, pruned.params, pruned.stats,
                    adam_cosine(LR, args.ft_epochs * per_epoch), train_set,
                    epochs=args.ft_epochs, batch_size=args.batch_size, seed=seed + 1,
                    progress=False)  # fmt: skip
        return pruned, run

    (pruned, run), wall, cpu = timed(pipeline)
    return record(
        data, arch, seed, "l1-ft", pruned.model, run.params, run.stats, (wall, cpu),
        fraction=fraction, flops_dense=pruned.flops_dense,
        pruned_accuracy=evaluate(pruned.model, pruned.params, pruned.stats, data.test),
    )  # fmt: skip


def bn_threshold(model: VisionModel, params, target: int) -> float:
    """The γ threshold whose :func:`gates.bn_keep` model has FLOPs closest to ``target``."""
    candidates = np.unique(np.concatenate([[0.0], *gates.bn_scales(model, params).values()]))
    best, best_gap = 0.0, None
    for t in candidates:
        keep = gates.bn_keep(model, params, float(t))
        gap = abs(model.with_widths({k: int(m.sum()) for k, m in keep.items()}).flops() - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = float(t), gap
    return best


def bn_optimizer(args, steps: int, model: VisionModel, clamp: bool):
    """The polarization penalty's gradient, Adam for the weights and (at ``--bn-lr``) the γ;
    with ``clamp``, every γ then clamped to [0, 1] (the reference variant)."""
    penalty = lambda p: gates.bn_polarization(model, p, args.bn_t, args.bn_strength)
    gamma = lambda path, _: "gamma" if jax.tree_util.keystr(path).endswith("'scale']") else "w"
    parts = [
        gates.add_penalty_gradient(penalty),
        optax.multi_transform(
            {"w": adam_cosine(LR, steps), "gamma": adam_cosine(args.bn_lr, steps)},
            lambda params: jax.tree_util.tree_map_with_path(gamma, params),
        ),
    ]
    return optax.chain(*parts, *([bn_export.clamp_scales(model)] if clamp else []))


def bn_run(args, data, train_set, arch, seed, model, target_flops):
    """Ours: γ from 1, ``--epochs`` with the regulariser, removal with β's constant folded
    forward (:func:`~jaxprune.structured.bn_export.bn_export`), no fine-tuning."""
    steps = args.epochs * (len(train_set) // args.batch_size)
    tx = bn_optimizer(args, steps, model, clamp=False)

    def pipeline():
        run = train(model, *model.init(seed), tx, train_set, epochs=args.epochs,
                    batch_size=args.batch_size, seed=seed, progress=False)  # fmt: skip
        threshold = bn_threshold(model, run.params, target_flops)
        keep = gates.bn_keep(model, run.params, threshold)
        return run, threshold, keep, bn_export.bn_export(model, run.params, run.stats, keep)

    (run, threshold, keep, result), wall, cpu = timed(pipeline)
    unfolded = filters.shrink(model, run.params, run.stats, keep)
    masked = bn_export.bn_masked(model, run.params, keep)
    return record(
        data, arch, seed, "bn-polar", result.model, result.params, result.stats, (wall, cpu),
        regularized_accuracy=evaluate(model, run.params, run.stats, data.test),
        masked_accuracy=evaluate(model, masked, run.stats, data.test),
        unfolded_accuracy=evaluate(*unfolded, data.test),
        **bn_fields(args, run, model, keep, threshold),
    )  # fmt: skip


def bn_reference_run(args, data, train_set, arch, seed, model, target_flops):
    """The reference's variant: γ from 0.5 clamped to [0, 1], ``--epochs − --ft-epochs`` with
    the regulariser, removal with γ and β zeroed (its ``set_bn_zero``: no fold), then
    ``--ft-epochs`` of fine-tuning the smaller model (equal total epochs)."""
    steps = (args.epochs - args.ft_epochs) * (len(train_set) // args.batch_size)
    ft_steps = args.ft_epochs * (len(train_set) // args.batch_size)
    tx = bn_optimizer(args, steps, model, clamp=True)
    params, stats = model.init(seed)
    params = bn_export.set_scales(model, params, 0.5)

    def pipeline():
        run = train(model, params, stats, tx, train_set, epochs=args.epochs - args.ft_epochs,
                    batch_size=args.batch_size, seed=seed, progress=False)  # fmt: skip
        threshold = bn_threshold(model, run.params, target_flops)
        keep = gates.bn_keep(model, run.params, threshold)
        small = filters.shrink(model, run.params, run.stats, keep)
        tuned = train(small[0], small[1], small[2], adam_cosine(LR, ft_steps), train_set,
                      epochs=args.ft_epochs, batch_size=args.batch_size, seed=seed + 1000,
                      progress=False)  # fmt: skip
        return run, threshold, keep, small, tuned

    (run, threshold, keep, small, tuned), wall, cpu = timed(pipeline)
    return record(
        data, arch, seed, "bn-polar-ref", small[0], tuned.params, tuned.stats, (wall, cpu),
        regularized_accuracy=evaluate(model, run.params, run.stats, data.test),
        pruned_accuracy=evaluate(*small, data.test),
        **bn_fields(args, run, model, keep, threshold),
    )  # fmt: skip


def bn_fields(args, run, model, keep, threshold) -> dict:
    leaves = flat_leaves(run.params)
    gammas = np.concatenate([np.ravel(v) for k, v in sorted(leaves.items()) if k.endswith("scale")])
    return dict(
        threshold=threshold, gammas=np.abs(gammas).tolist(), flops_dense=model.flops(),
        density=sum(int(k.sum()) for k in keep.values()) / sum(k.size for k in keep.values()),
        bn_t=args.bn_t, bn_strength=args.bn_strength, bn_lr=args.bn_lr,
    )  # fmt: skip


def plot(path: Path, runs: list[dict]) -> None:
    """Histograms of the lowest seed's final gate values σ(logit) (top row) and, when measured,
    of its |γ| after the BatchNorm-γ regulariser with the removal threshold (bottom row)."""
    from matplotlib.figure import Figure

    seed = min(r["seed"] for r in runs)
    rows = [
        [r for r in runs if r["method"] == method and r["seed"] == seed]
        for method in ("polarization", "bn-polar")
    ]
    rows = [row for row in rows if row]
    cols = max(len(row) for row in rows)
    fig = Figure(figsize=(3.2 * cols, 2.8 * len(rows)))
    for i, row in enumerate(rows):
        for j, r in enumerate(row):
            ax = fig.add_subplot(len(rows), cols, i * cols + j + 1)
            if r["method"] == "polarization":
                values = np.concatenate([np.asarray(v) for v in r["gates"].values()])
                ax.hist(values, bins=40, range=(0, 1), color="#337ab7")
                ax.set_xlabel("gate σ(logit)", fontsize=8)
            else:
                ax.hist(r["gammas"], bins=40, color="#d9534f")
                ax.axvline(r["threshold"], color="k", lw=0.8, ls="--")
                # Every BatchNorm's |γ|; the threshold applies to each channel's largest |γ|
                # over its group's BatchNorms (the same values where a group has one).
                ax.set_xlabel("BatchNorm |γ| (dashed: channel threshold)", fontsize=8)
            ax.set_title(f"{r['dataset']} {r['arch']} {r['method']} (seed {seed})", fontsize=8)
            ax.set_yscale("log")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    args = parse_args()
    skip = ("out", "plot", "datasets", "seeds", "archs", *METHOD_ARGS)
    results = Results(args.out, {k: v for k, v in vars(args).items() if k not in skip})
    for r in results.data["runs"]:
        if r["method"] in ("bn-polar", "bn-polar-ref") and r["method"] in args.methods:
            other = {k: r[k] for k in ("bn_t", "bn_strength", "bn_lr") if r[k] != vars(args)[k]}
            if other:
                raise SystemExit(
                    f"{args.out} has bn-polar runs with {other}: pass the same values, or another "
                    "--out to compare settings"
                )
    for seed in args.seeds:
        for name in args.datasets:
            data = ImageData.load(name)
            train_set = data.train.take(args.train_size, seed)
            for arch in args.archs:
                model = VisionModel(ARCHS[arch](data.train.images.shape[1]))
                key = dict(dataset=data.name, arch=arch, seed=seed)
                todo = [m for m in args.methods if not results.has(**key, method=m)]
                if "dense" in todo:
                    results.add(dense_run(args, data, train_set, arch, seed, model))
                if {"polarization", "l1-ft", "bn-polar", "bn-polar-ref"} & set(
                    todo
                ) and not results.has(
                    **key, method="polarization"
                ):  # the FLOPs target of the other two
                    results.add(polarization_run(args, data, train_set, arch, seed, model))
                polar = next(
                    (r for r in results.data["runs"]
                     if Results.key(r) == Results.key({**key, "method": "polarization"})), None,
                )  # fmt: skip
                if "l1-ft" in todo:
                    results.add(l1_run(args, data, train_set, arch, seed, model, polar["flops"]))
                if "bn-polar" in todo:
                    results.add(bn_run(args, data, train_set, arch, seed, model, polar["flops"]))
                if "bn-polar-ref" in todo:
                    results.add(
                        bn_reference_run(args, data, train_set, arch, seed, model, polar["flops"])
                    )
    if args.plot is not None:
        plot(args.plot, results.data["runs"])
    print(json.dumps({"runs": len(results.data["runs"])}))


if __name__ == "__main__":
    main()
