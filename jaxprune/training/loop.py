"""A small, reusable Optax training loop for the vision models: functional BatchNorm, seeds,
progress bar, Orbax checkpoints.

::

    model = VisionModel(VGGConfig())
    params, stats = model.init(seed=0)
    data = ImageData.load("mnist")                 # standardised float images, int labels
    run = train(model, params, stats, optax.adam(1e-3), data.train, epochs=2, seed=0,
                eval_set=data.test, checkpoint_dir="runs/vgg")
    run.params, run.stats, run.history             # history: one dict per epoch

Any Optax transformation works, :func:`~jaxprune.training.keep_masks` and
:func:`~jaxprune.training.sparse_training` included: when the optimizer state holds a
:class:`~jaxprune.training.SparseState`, the model runs on
:func:`~jaxprune.training.forward_params` (STE's masked weights).

One jitted step: the loss of ``model.apply(params, stats, x, train=True)`` (BatchNorm uses the
batch's statistics and returns new running ones), its gradient, ``tx.update`` and
``optax.apply_updates``. Each epoch visits the training set in a permutation drawn from
``seed + epoch`` and drops the last partial batch (one compiled shape). With ``checkpoint_dir``
the params, BatchNorm statistics and optimizer state are saved atomically after every epoch
(:func:`jaxprune.checkpoint.save_checkpoint`); ``resume=True`` continues from the last one.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxprune.checkpoint import is_checkpoint, load_checkpoint, save_checkpoint
from jaxprune.data.images import load_images
from jaxprune.models.vision import VisionModel
from jaxprune.training.sparse import SparseState, forward_params

__all__ = ["ImageData", "Split", "TrainResult", "evaluate", "train"]


@dataclasses.dataclass(frozen=True)
class Split:
    """Images ``(n, h, w, c)`` float32 and labels ``(n,)`` int32 of one split."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, n: int, seed: int = 0) -> Split:
        """``n`` examples drawn without replacement (deterministic in ``seed``)."""
        index = np.random.default_rng(seed).permutation(len(self))[:n]
        return Split(self.images[index], self.labels[index])

    def imbalanced(self, minority: Sequence[int], fraction: float, seed: int = 0) -> Split:
        """Class-imbalanced: every example of the other classes, ``⌊fraction·n_c⌋`` (at least
        one) drawn without replacement from each ``minority`` class ``c`` (Beta-Rank's headline
        setting is imbalanced data); order as in ``self``.

        Raises:
          ValueError: ``fraction`` outside ``(0, 1]`` or a minority class with no examples.
        """
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        rng = np.random.default_rng(seed)
        keep = np.ones(len(self), bool)
        for c in sorted(set(int(c) for c in minority)):
            members = np.flatnonzero(self.labels == c)
            if len(members) == 0:
                raise ValueError(f"minority class {c} has no examples")
            n = max(1, int(np.floor(fraction * len(members))))
            keep[members] = False
            keep[rng.choice(members, n, replace=False)] = True
        return Split(self.images[keep], self.labels[keep])


@dataclasses.dataclass(frozen=True)
class ImageData:
    """Train and test splits standardised with the training set's pixel mean and deviation."""

    train: Split
    test: Split
    num_classes: int
    name: str

    @classmethod
    def load(cls, name: str) -> ImageData:
        """``name`` as :func:`jaxprune.data.images.load_images` takes it (``"mnist"``, ...)."""
        train, test = load_images(name, "train"), load_images(name, "test")
        x_train, x_test = train.as_float(), test.as_float()
        mean, std = float(x_train.mean()), float(x_train.std())
        scale = lambda x: ((x - mean) / std).astype(np.float32)
        return cls(
            Split(scale(x_train), train.labels),
            Split(scale(x_test), test.labels),
            max(train.num_classes, test.num_classes),
            str(name),
        )


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """``params``, ``stats``, ``opt_state`` after training; ``history``: one dict per epoch
    (``epoch``, ``loss``, ``train_accuracy``, ``test_accuracy`` if evaluated, ``seconds`` wall,
    ``cpu_seconds``); ``steps``: optimizer steps taken in all."""

    params: Any
    stats: Any
    opt_state: Any
    history: list[dict[str, float]]
    steps: int


def _loss_step(model: VisionModel, tx: optax.GradientTransformation) -> Callable:
    def loss_fn(params, stats, opt_state, x, y):
        if _has_sparse(opt_state):
            params = forward_params(params, opt_state)
        logits, new_stats = model.apply(params, stats, x, train=True)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, (new_stats, jnp.sum(jnp.argmax(logits, -1) == y))

    def step(params, stats, opt_state, x, y):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (stats, correct)), grads = grad_fn(params, stats, opt_state, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, loss, correct

    return jax.jit(step)


def _has_sparse(opt_state: Any) -> bool:
    leaves = jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: isinstance(x, SparseState))
    return any(isinstance(x, SparseState) for x in leaves)


@functools.partial(jax.jit, static_argnums=0)
def _correct(model: VisionModel, params, stats, x: jax.Array, y: jax.Array) -> jax.Array:
    logits, _ = model.apply(params, stats, x)
    return jnp.sum(jnp.argmax(logits, -1) == y)


def evaluate(
    model: VisionModel, params: Any, stats: Any, split: Split, batch_size: int = 1000
) -> float:
    """Top-1 accuracy with running BatchNorm statistics (every example counted once)."""
    correct = 0
    for start in range(0, len(split), batch_size):
        x = jnp.asarray(split.images[start : start + batch_size])
        y = jnp.asarray(split.labels[start : start + batch_size])
        correct += int(_correct(model, params, stats, x, y))
    return correct / len(split)


def _check_run(train_set: Split, epochs: int, batch_size: int) -> None:
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    if len(train_set) < batch_size:
        raise ValueError(
            f"the training set has {len(train_set)} examples, fewer than one batch of "
            f"{batch_size}; lower batch_size"
        )


def train(
    model: VisionModel,
    params: Any,
    stats: Any,
    tx: optax.GradientTransformation,
    train_set: Split,
    *,
    epochs: int,
    batch_size: int = 128,
    seed: int = 0,
    eval_set: Split | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    opt_state: Any = None,
) -> TrainResult:
    """Trains ``params`` (and BatchNorm ``stats``) with ``tx`` for ``epochs`` (see the module doc).

    Args:
      model: a :class:`~jaxprune.models.vision.VisionModel`.
      params, stats: nested dicts, e.g. from ``model.init(seed)``.
      tx: any Optax transformation (``update`` receives the params).
      train_set: the training split.
      epochs: passes over ``train_set``.
      batch_size: examples per step (the last partial batch of an epoch is dropped).
      seed: seeds the epoch permutations.
      eval_set: evaluated (accuracy) after every epoch if given.
      checkpoint_dir: save after every epoch there (atomic; overwritten each epoch).
      resume: continue from ``checkpoint_dir``'s checkpoint if one is there.
      progress: show a progress bar.
      opt_state: a state of ``tx`` to start from (default ``tx.init(params)``).

    Raises:
      ValueError: bad ``epochs``/``batch_size``, or a resumed checkpoint of another model.
    """
    _check_run(train_set, epochs, batch_size)
    opt_state = tx.init(params) if opt_state is None else opt_state
    history: list[dict[str, float]] = []
    if resume and checkpoint_dir is not None and is_checkpoint(checkpoint_dir):
        params, stats, opt_state, history = _restore(checkpoint_dir, model, opt_state)
    step_fn = _loss_step(model, tx)
    per_epoch = len(train_set) // batch_size
    for epoch in range(len(history), epochs):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        order = np.random.default_rng([seed, epoch]).permutation(len(train_set))
        losses, correct = [], 0
        bar = tqdm(range(per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress)
        for i in bar:
            index = order[i * batch_size : (i + 1) * batch_size]
            x, y = jnp.asarray(train_set.images[index]), jnp.asarray(train_set.labels[index])
            params, stats, opt_state, loss, hits = step_fn(params, stats, opt_state, x, y)
            losses.append(loss)
            correct += hits
        record = {
            "epoch": epoch + 1,
            "loss": float(np.mean(jax.device_get(losses))),
            "train_accuracy": float(correct) / (per_epoch * batch_size),
        }
        if eval_set is not None:
            record["test_accuracy"] = evaluate(model, params, stats, eval_set)
        record["seconds"] = time.perf_counter() - start_wall
        record["cpu_seconds"] = time.process_time() - start_cpu
        history.append(record)
        if checkpoint_dir is not None:
            _save(checkpoint_dir, model, params, stats, opt_state, history)
    return TrainResult(params, stats, opt_state, history, len(history) * per_epoch)


def _save(directory, model, params, stats, opt_state, history) -> None:
    opt_leaves = dict(enumerate(jax.tree_util.tree_leaves(opt_state)))
    save_checkpoint(
        directory,
        {"params": params, "stats": stats, "opt_state": opt_leaves},
        config={"model": model.to_dict(), "history": history},
        overwrite=True,
    )


def _restore(directory, model: VisionModel, opt_state) -> tuple[Any, Any, Any, list]:
    ckpt = load_checkpoint(directory)
    saved = ckpt.config["model"]
    if VisionModel.from_dict(saved) != model:
        raise ValueError(f"{directory} holds a checkpoint of {saved}, not of {model.to_dict()}")
    leaves = ckpt.params["opt_state"]
    treedef = jax.tree_util.tree_structure(opt_state)
    if treedef.num_leaves != len(leaves):
        raise ValueError(
            f"{directory}'s optimizer state has {len(leaves)} leaves, this optimizer's has "
            f"{treedef.num_leaves}; resume with the same optimizer"
        )
    restored = jax.tree_util.tree_unflatten(treedef, [leaves[i] for i in range(len(leaves))])
    return ckpt.params["params"], ckpt.params["stats"], restored, list(ckpt.config["history"])
