"""Accuracy vs FLOPs of token pruning on a small ViT trained on MNIST by this script.

The ViT (28×28 images, patch 4: 49 patch tokens + CLS; 6 blocks, width 64, 4 heads, MLP 128) is
trained from scratch with AdamW (seeded, ``--epochs`` passes over the 60,000 training digits) and
then pruned without any further training: for each FLOPs-reduction target a schedule prunes
before blocks 2, 3 and 4 with one keep ratio, and each method's accuracy on the first
``--test-images`` test digits is measured (random drop: mean over ``--random-seeds`` seeds).
One JSON document goes to ``--out``.

    python benchmarks/vit_mnist.py --epochs 1 --test-images 5000 --random-seeds 2 \
        --out benchmarks/results/vit_mnist_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import write_json
from tqdm import tqdm

from jaxprune.data.images import load_images
from jaxprune.models.vit import ViTConfig, ViTModel
from jaxprune.token_pruning import TokenSchedule, prune_tokens, schedule_for_flop_reduction

CONFIG = ViTConfig(
    image_size=28,
    patch_size=4,
    num_channels=1,
    hidden_size=64,
    num_hidden_layers=6,
    num_attention_heads=4,
    intermediate_size=128,
    layer_norm_eps=1e-6,
    num_labels=10,
)
PRUNE_LAYERS = (2, 3, 4)
MEAN, STD = 0.1307, 0.3081  # MNIST pixel statistics


def _inputs(images: np.ndarray) -> jax.Array:
    return (jnp.asarray(images, jnp.float32)[..., None] / 255.0 - MEAN) / STD


def train(model: ViTModel, epochs: int, batch: int, lr: float, seed: int):
    """AdamW with warmup and cosine decay; returns params and the final training loss."""
    data = load_images("mnist", "train")
    steps = epochs * (len(data) // batch)
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, steps // 20, steps)
    opt = optax.adamw(schedule, weight_decay=0.05)
    params = model.init_params(seed)
    state = opt.init(params)

    @jax.jit
    def step(params, state, x, y):
        def loss_fn(p):
            logits = model.logits(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    rng = np.random.default_rng(seed)
    losses = []
    for _ in tqdm(range(epochs), desc="epochs"):
        order = rng.permutation(len(data))
        for i in range(len(data) // batch):
            idx = order[i * batch : (i + 1) * batch]
            params, state, loss = step(params, state, _inputs(data.images[idx]), data.labels[idx])
            losses.append(float(loss))
    return params, float(np.mean(losses[-100:]))


def accuracy(logits_fn, params, images, labels, batch=1000) -> float:
    correct = 0
    for start in range(0, len(images), batch):
        logits = logits_fn(params, _inputs(images[start : start + batch]))
        correct += int((np.asarray(logits).argmax(-1) == labels[start : start + batch]).sum())
    return correct / len(images)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/vit_mnist_cpu.json")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--targets", type=float, nargs="+", default=[0.2, 0.35, 0.5])
    p.add_argument("--test-images", type=int, default=10_000)
    p.add_argument("--random-seeds", type=int, default=3)
    args = p.parse_args(argv)
    model = ViTModel(CONFIG)
    start = time.perf_counter()
    params, train_loss = train(model, args.epochs, args.batch, args.lr, args.seed)
    train_s = time.perf_counter() - start
    test = load_images("mnist", "test")
    test_images, test_labels = test.images[: args.test_images], test.labels[: args.test_images]
    rows = []
    dense = TokenSchedule.dense(CONFIG)
    dense_acc = accuracy(prune_tokens(model, dense).logits, params, test_images, test_labels)
    rows.append({"method": "dense", "flop_reduction": 0.0, "accuracy": dense_acc})
    for target in args.targets:
        schedule = schedule_for_flop_reduction(CONFIG, target, PRUNE_LAYERS)
        for method in ("zero-tprune", "random", "evit", "tome"):
            seeds = range(args.random_seeds) if method == "random" else (0,)
            accs = [
                accuracy(
                    prune_tokens(model, schedule, method, seed=s).logits,
                    params,
                    test_images,
                    test_labels,
                )
                for s in seeds
            ]
            row = {
                "method": method,
                "target": target,
                "flop_reduction": round(schedule.flop_reduction(CONFIG), 4),
                "counts": list(schedule.counts),
                "accuracy": float(np.mean(accs)),
                "accuracy_runs": accs,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    out = {
        "config": CONFIG.to_dict(),
        "prune_layers": PRUNE_LAYERS,
        "training": {**vars(args), "seconds": round(train_s, 1), "final_loss": train_loss},
        "device": jax.devices()[0].device_kind,
        "test_images": len(test_labels),
        "rows": rows,
    }
    write_json(args.out, out, indent=1)


if __name__ == "__main__":
    main()
