"""Token pruning of DINOv2 ViT-S/14: images/s, CLS cosine similarity and k-NN accuracy vs dense.

For each FLOPs-reduction target (default 20/35/50%) a schedule prunes before blocks 3, 6 and 9
with one keep ratio (``schedule_for_flop_reduction``); every method (Zero-TPrune, random drop,
EViT-style CLS-attention top-k, ToMe-style merging) runs that schedule. Per configuration one JSON
line goes to ``--out`` (appended as soon as it is measured):

- ``images_per_s``: median over ``--repeats`` timings of ``--speed-batches`` batches of the pruned
  forward (one compiled program), and ``speedup`` over the dense forward timed in the same run;
- ``cos_mean``/``cos_min``: cosine similarity of the CLS features to the dense model's on the
  k-NN test images;
- ``knn``: weighted k-NN (k = 20, T = 0.07) accuracy per dataset from CLS features of
  ``--train`` training and ``--test`` test images (MNIST / Fashion-MNIST resized to 224, grey to
  three channels, ImageNet normalisation).

A machine that cannot download (an accelerator box) reads a bundle written here with
``--write-bundle DIR`` (weights, block matrices rounded to float16 to fit a 64 MiB transfer, and
the image subsets) and runs with ``--bundle DIR``.

    python benchmarks/vit_tokens.py --out benchmarks/results/vit_tokens_cpu.jsonl --train 0
    python benchmarks/vit_tokens.py --write-bundle .gpu_bundle --train 5000 --test 1000
    python benchmarks/vit_tokens.py --bundle .gpu_bundle --out $OUT/vit_tokens_gpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import append_jsonl

from jaxprune.data.images import load_images
from jaxprune.data.vision import imagenet_inputs
from jaxprune.eval.knn import knn_accuracy
from jaxprune.models.vit import ViTConfig, ViTModel
from jaxprune.token_pruning import TokenSchedule, prune_tokens, schedule_for_flop_reduction

METHODS = ("zero-tprune", "random", "evit", "tome")


def _flatten(tree, prefix=""):
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, path + "/")
        else:
            yield path, np.asarray(v)


def _unflatten(flat):
    tree: dict = {}
    for path, v in flat.items():
        keys = [int(k) if k.isdigit() else k for k in path.split("/")]
        node = tree
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = jnp.asarray(v.astype(np.float32))
    return tree


def _subsets(datasets, n_train, n_test, seed=0):
    out = {}
    for name in datasets:
        train, test = load_images(name, "train"), load_images(name, "test")
        pick = np.random.default_rng(seed).permutation(len(train))[:n_train]
        out[name] = {
            "train_images": train.images[pick],
            "train_labels": train.labels[pick],
            "test_images": test.images[:n_test],
            "test_labels": test.labels[:n_test],
        }
    return out


def write_bundle(directory: Path, args) -> None:
    """Weights (matrices as float16) and image subsets for a machine without network."""
    from jaxprune.models.loaders.vit import load_vit

    vit = load_vit(args.model)
    directory.mkdir(parents=True, exist_ok=True)
    flat = {
        p: (v.astype(np.float16) if v.ndim == 2 and v.size > 100_000 else v)
        for p, v in _flatten(vit.params)
    }
    np.savez(directory / "weights.npz", **flat)
    (directory / "config.json").write_text(json.dumps(vit.model.config.to_dict()))
    for name, sets in _subsets(args.datasets, args.train, args.test).items():
        np.savez_compressed(directory / f"{name}.npz", **sets)


def _load(args):
    if args.bundle:
        d = Path(args.bundle)
        config = ViTConfig.from_dict(json.loads((d / "config.json").read_text()))
        with np.load(d / "weights.npz") as w:
            params = _unflatten({k: w[k] for k in w.files})
        data = {}
        for name in args.datasets:
            with np.load(d / f"{name}.npz") as z:
                data[name] = {k: z[k][: args.train if "train" in k else args.test] for k in z}
        return ViTModel(config), params, f"{args.model} (bundle: float16 matrices)", data
    from jaxprune.models.loaders.vit import load_vit

    vit = load_vit(args.model)
    return vit.model, vit.params, args.model, _subsets(args.datasets, args.train, args.test)


def _features(fn, params, images: np.ndarray, batch: int) -> np.ndarray:
    out = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        pad = batch - len(chunk)
        if pad:  # one compiled shape: pad the last batch and drop the padding's features
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
        out.append(np.asarray(fn(params, imagenet_inputs(chunk)))[: batch - pad])
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def _images_per_s(fn, params, x: jax.Array, batches: int, repeats: int) -> float:
    fn(params, x).block_until_ready()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            fn(params, x).block_until_ready()
        times.append(time.perf_counter() - start)
    return x.shape[0] * batches / statistics.median(times)


def _variant(spec: str) -> tuple[str, dict]:
    """``"zero-tprune:iterations=1;similarity_share=1"`` → ``("zero-tprune", {...})``."""
    method, _, opts = spec.partition(":")
    options = {}
    for item in filter(None, opts.split(";")):
        key, value = item.split("=")
        options[key] = None if value == "none" else json.loads(value)
    return method, options


def _configs(config, targets, methods):
    yield "dense", 0.0, TokenSchedule.dense(config)
    for target in targets:
        schedule = schedule_for_flop_reduction(config, target)
        for method in methods:
            yield method, target, schedule


def run(args) -> None:
    if args.precision:
        jax.config.update("jax_default_matmul_precision", args.precision)
    model, params, source, data = _load(args)
    device = jax.devices()[0].device_kind
    speed_x = imagenet_inputs(np.asarray(data[args.datasets[0]]["test_images"][: args.batch]))
    dense_rate, dense_feats = None, {}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for method, target, schedule in _configs(model.config, args.targets, args.methods):
        name, options = _variant("zero-tprune" if method == "dense" else method)
        pruned = prune_tokens(model, schedule, name, **options)
        rate = _images_per_s(pruned.features, params, speed_x, args.speed_batches, args.repeats)
        dense_rate = dense_rate or rate
        row = {
            "device": device,
            "model": source,
            "method": method,
            "target_flop_reduction": target,
            "flop_reduction": round(schedule.flop_reduction(model.config), 4),
            "gflops_per_image": round(schedule.flops(model.config) / 1e9, 3),
            "counts": list(schedule.counts),
            "batch": int(speed_x.shape[0]),
            "images_per_s": round(rate, 2),
            "speedup": round(rate / dense_rate, 3),
            "knn": {},
        }
        cos = []
        for name, sets in data.items():
            test = _features(pruned.features, params, sets["test_images"], args.batch)
            if method == "dense":
                dense_feats[name] = test
            ref = dense_feats[name]
            cos.append(
                (test * ref).sum(1) / np.linalg.norm(test, axis=1) / np.linalg.norm(ref, axis=1)
            )
            if len(sets["train_images"]):
                train = _features(pruned.features, params, sets["train_images"], args.batch)
                row["knn"][name] = knn_accuracy(
                    train, sets["train_labels"], test, sets["test_labels"], k=20
                )
        cos = np.concatenate(cos)
        row.update(cos_mean=round(float(cos.mean()), 5), cos_min=round(float(cos.min()), 5))
        row["test_images"] = {n: int(len(s["test_images"])) for n, s in data.items()}
        row["train_images"] = {n: int(len(s["train_images"])) for n, s in data.items()}
        print(append_jsonl(out, row), flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="dinov2-vits14")
    p.add_argument("--out", default="benchmarks/results/vit_tokens_cpu.jsonl")
    p.add_argument("--bundle", help="read weights and images from a --write-bundle directory")
    p.add_argument("--write-bundle", help="write such a directory and exit")
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    p.add_argument("--train", type=int, default=5000, help="k-NN training images per dataset")
    p.add_argument("--test", type=int, default=1000, help="k-NN test images per dataset")
    p.add_argument("--targets", type=float, nargs="+", default=[0.35, 0.5, 0.2])
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        help="method[:option=json;...], e.g. zero-tprune:iterations=1;variance_range=[0,1e9]",
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--speed-batches", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precision", default="highest", help="jax_default_matmul_precision")
    args = p.parse_args(argv)
    if args.write_bundle:
        write_bundle(Path(args.write_bundle), args)
    else:
        run(args)


if __name__ == "__main__":
    main()
