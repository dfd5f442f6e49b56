"""Recovery fine-tuning of a pruned language model with Optax: LoRA or masked full fine-tuning.

:func:`recover` trains next-token prediction on token windows (e.g. ``load_windows(...,
split="calib")``) and returns params that keep the pruned model's sparsity::

    result = recover(model, pruned_params, windows, RecoverConfig(method="lora", steps=200),
                     masks=masks, eval_windows=hamlet)
    result.params            # LoRA merged with M ⊙ (W + s·AB), or the masked-fine-tuned params
    result.report            # loss per step, held-out perplexity, tokens, seconds

- **Optimizer**: AdamW with linear warmup and cosine decay to 0, global-norm clipping, gradient
  accumulation (``grad_accum`` micro-batches summed in a ``lax.scan`` inside the one compiled
  step). Masked fine-tuning wraps it in :func:`jaxprune.training.keep_masks`, so no pruned entry
  ever becomes non-zero; LoRA trains only the adapter tree (:mod:`jaxprune.training.lora`).
- **Precision**: the trained values are float32 master weights, also for a bfloat16 checkpoint
  (the returned params have the input's dtypes again); ``compute_dtype="bfloat16"`` casts them
  (and the frozen base) for the forward and backward passes only.
- **Held-out perplexity** is measured on the model that would be returned at that step (LoRA
  merged keeping the masks), so every point of the curve is the same kind of model.
- **Masks from zeros**: :func:`zero_masks` reads the masks of a sparse model saved without them
  (a Hugging Face export, a GGUF) from its exact zeros.
- **Devices**: with ``mesh`` the micro-batches are split over the mesh's ``data`` axis and the
  params replicated, so XLA computes per-device gradients and all-reduces them.
- **Exact resume**: with ``checkpoint_dir`` and ``save_every``, the trained values, the optimizer
  state, the step and the history are saved atomically (:mod:`jaxprune.checkpoint`); a later call
  with the same arguments continues from there and ends with the same params as an uninterrupted
  run (the batch of step ``t`` and its dropout key depend only on ``t``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune._log import info
from jaxprune.checkpoint import is_checkpoint
from jaxprune.core.config import ConfigIO
from jaxprune.core.deprecation import renamed
from jaxprune.core.paths import get_leaf, set_leaves
from jaxprune.eval import perplexity
from jaxprune.training.lora import LoraConfig, init_lora, lora_logits, merge
from jaxprune.training.masked import keep_masks, mask_lookup
from jaxprune.training.recover_state import restore_state, save_state
from jaxprune.training.zero_masks import ZERO_MASK_FRACTION, zero_masks

RECOVERY_METHODS = ("lora", "masked")
_DEFAULT_LR = {"lora": 2e-4, "masked": 2e-5}


@dataclasses.dataclass(frozen=True)
class RecoverConfig(ConfigIO):
    """A recovery run; invalid values raise ``ValueError`` when the config is made.

    Attributes:
      method: ``"lora"`` (adapters, merged keeping the masks) or ``"masked"`` (all weights
        trained, pruned entries held at zero).
      steps: optimizer steps.
      batch_size: windows per micro-batch.
      grad_accum: micro-batches per step (tokens per step = ``steps·batch·accum·seqlen``).
      learning_rate: peak rate (default 2e-4 for LoRA, 2e-5 for masked).
      warmup_steps: linear warmup steps (default a tenth of ``steps``), then cosine to 0.
      weight_decay: AdamW's decoupled weight decay.
      clip_norm: global gradient-norm clip (``0``: none).
      compute_dtype: ``"float32"`` or ``"bfloat16"`` (forward/backward only).
      eval_every: held-out perplexity every this many steps (``0``: only before and after).
      save_every: training-state checkpoint every this many steps (needs ``checkpoint_dir``).
      seed: LoRA init and dropout.
      lora: the adapters (used by ``method="lora"``).
    """

    method: str = "lora"
    steps: int = 200
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float | None = None
    warmup_steps: int | None = None
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    compute_dtype: str = "float32"
    eval_every: int = 0
    save_every: int = 0
    seed: int = 0
    lora: LoraConfig = LoraConfig()

    NAME = "recovery config"

    def __post_init__(self):
        if self.method not in RECOVERY_METHODS:
            raise ValueError(
                f"recovery method must be one of {RECOVERY_METHODS}, got {self.method!r}"
            )
        for name in ("steps", "batch_size", "grad_accum"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("eval_every", "save_every", "weight_decay", "clip_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps), got {self.warmup_steps}")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(
                f"compute_dtype must be float32 or bfloat16, got {self.compute_dtype!r}"
            )
        if isinstance(self.lora, dict):
            object.__setattr__(self, "lora", LoraConfig.from_dict(self.lora))

    @property
    def peak_lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else _DEFAULT_LR[self.method]

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else max(1, self.steps // 10)

    def optimizer(self) -> optax.GradientTransformation:
        """Clipping, then AdamW on the warmup + cosine schedule."""
        schedule = optax.warmup_cosine_decay_schedule(0.0, self.peak_lr, self.warmup, self.steps)
        adamw = optax.adamw(schedule, weight_decay=self.weight_decay)
        return (
            optax.chain(optax.clip_by_global_norm(self.clip_norm), adamw)
            if self.clip_norm
            else adamw
        )


@dataclasses.dataclass(frozen=True)
class RecoverResult:
    """``params``: the recovered params (LoRA merged, keeping ``masks``); ``lora``: the adapter
    tree (``None`` for masked); ``report``: history, tokens, seconds, config."""

    params: Any
    lora: Any
    report: dict[str, Any]


def _cast(tree: Any, dtype: Any) -> Any:
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def _nll(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))


def make_loss(model: Any, config: RecoverConfig) -> Callable:
    """``loss(trained, frozen, tokens, key)``: mean next-token NLL with the run's precision."""
    dtype = jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32
    run_model = dataclasses.replace(model, dtype=dtype)

    def loss(trained, frozen, tokens, key):
        if config.method == "masked":
            return _nll(run_model.logits(_cast(trained, dtype), tokens), tokens)
        logits = lora_logits(
            run_model,
            _cast(frozen, dtype),
            _cast(trained, dtype),
            tokens,
            config.lora,
            dropout_key=key,
        )
        return _nll(logits, tokens)

    return loss


def make_step(model: Any, config: RecoverConfig, tx: optax.GradientTransformation) -> Callable:
    """The compiled step: ``(trained, opt_state, frozen, batches (accum, B, T), step) -> (trained,
    opt_state, loss)``; gradients are averaged over the micro-batches."""
    grad_fn = jax.value_and_grad(make_loss(model, config))
    base_key = jax.random.key(config.seed + 1)

    def step(trained, opt_state, frozen, batches, index):
        key = jax.random.fold_in(base_key, index)

        def micro(carry, item):
            j, tokens = item
            value, grads = grad_fn(trained, frozen, tokens, jax.random.fold_in(key, j))
            return jax.tree.map(jnp.add, carry, (value, grads)), None

        zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, trained))
        (total, grads), _ = jax.lax.scan(micro, zero, (jnp.arange(batches.shape[0]), batches))
        k = batches.shape[0]
        grads = jax.tree.map(lambda g: g / k, grads)
        updates, opt_state = tx.update(grads, opt_state, trained)
        return optax.apply_updates(trained, updates), opt_state, total / k

    return jax.jit(step, donate_argnums=(0, 1))


def batch_at(windows: np.ndarray, step: int, config: RecoverConfig) -> np.ndarray:
    """Step ``step``'s micro-batches ``(accum, batch, seqlen)``: the next windows, cyclically."""
    per_step = config.batch_size * config.grad_accum
    idx = (step * per_step + np.arange(per_step)) % windows.shape[0]
    return windows[idx].reshape(config.grad_accum, config.batch_size, windows.shape[1])


def _check_inputs(windows: np.ndarray, config: RecoverConfig, mesh: Any, masks: Any) -> None:
    if windows.ndim != 2 or windows.shape[1] < 2 or not np.issubdtype(windows.dtype, np.integer):
        raise ValueError(
            f"training windows must be int (n, seqlen >= 2), got {windows.shape} {windows.dtype}"
        )
    if mesh is not None and config.batch_size % mesh.shape["data"]:
        raise ValueError(
            f"batch_size {config.batch_size} does not split over the mesh's {mesh.shape['data']} "
            "data devices; choose a multiple"
        )


def _effective(params, trained, config: RecoverConfig, masks) -> Any:
    if config.method == "masked":
        return trained
    return merge(params, trained, config.lora, masks=masks)


def _held_out(model, params, trained, config: RecoverConfig, eval_windows, masks) -> float | None:
    """Held-out perplexity of the model as it would be returned now (LoRA merged with masks)."""
    if eval_windows is None:
        return None
    return _evaluate(model, _effective(params, trained, config, masks), eval_windows, config)


def _evaluate(model, params, eval_windows, config: RecoverConfig) -> float | None:
    if eval_windows is None:
        return None
    return perplexity(model, params, eval_windows, batch_size=config.batch_size).ppl


def _as_float32(tree: Any) -> Any:
    """float32 master copies of the floating leaves (a fresh buffer each: the step donates)."""
    return jax.tree.map(
        lambda x: jnp.array(x, jnp.float32 if jnp.issubdtype(x.dtype, jnp.floating) else None),
        tree,
    )


def _like(tree: Any, reference: Any) -> Any:
    """``tree`` with ``reference``'s dtypes, leaf by leaf."""
    return jax.tree.map(lambda x, ref: jnp.asarray(x, jnp.asarray(ref).dtype), tree, reference)


def recover(
    model: Any,
    params: Any,
    windows: np.ndarray,
    config: RecoverConfig,
    *,
    masks: Any = None,
    eval_windows: np.ndarray | None = None,
    checkpoint_dir: str | Path | None = None,
    mesh: Any = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> RecoverResult:
    """Fine-tunes ``params`` to recover quality, keeping ``masks`` (see the module docstring).

    Args:
      model: a :class:`jaxprune.models.LanguageModel`.
      params: the (pruned) params, nested dicts.
      windows: int training windows ``(n, seqlen)``; step ``t`` reads the next
        ``batch_size·grad_accum`` of them, cyclically.
      config: the run.
      masks: keep-masks of the pruned model (params-like, ``None`` where unpruned): ``masked``
        holds them, ``lora`` merges keeping them. ``None`` (a dense or structurally shrunk
        model): every weight trains, LoRA merges plainly.
      eval_windows: held-out windows for perplexity (``None``: no evaluation).
      checkpoint_dir: where the training state is saved every ``config.save_every`` steps, and
        resumed from when it holds one of the same run.
      mesh: a :func:`jaxprune.sharding.make_mesh` mesh for data parallelism.
      progress: a progress bar with the loss.
      on_step: called as ``on_step(step, loss)`` after every step (step counted from 1).

    Returns:
      :class:`RecoverResult`.
    """
    windows = np.asarray(windows)
    _check_inputs(windows, config, mesh, masks)
    if masks is not None:  # pruned entries exactly zero, whatever the caller's params hold
        zeroed = {p: jnp.where(m, get_leaf(params, p), 0) for p, m in mask_lookup(masks).items()}
        params = set_leaves(params, zeroed)
    if config.method == "lora":
        trained, frozen = init_lora(model, params, config.lora, jax.random.key(config.seed)), params
        tx = config.optimizer()
    else:
        trained, frozen = _as_float32(params), None
        tx = keep_masks(config.optimizer(), {} if masks is None else masks)
    opt_state = tx.init(trained)
    start, history = 0, {"loss": [], "eval": []}
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if directory is not None and is_checkpoint(directory):
        trained, opt_state, start, history = restore_state(directory, config, trained, opt_state)
    step_fn = make_step(model, config, tx)
    place = _placer(mesh)
    trained, opt_state, frozen = place(trained), place(opt_state), place(frozen)
    if start == 0:
        history["eval"].append([0, _held_out(model, params, trained, config, eval_windows, masks)])
    began = last_step = time.perf_counter()
    steps = range(start, config.steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"recover ({config.method})", initial=start, total=config.steps)
    for t in steps:
        batch = place(jnp.asarray(batch_at(windows, t, config)), batch=True)
        trained, opt_state, loss = step_fn(trained, opt_state, frozen, batch, t)
        loss = float(loss)
        history["loss"].append([t + 1, loss])
        if progress:
            steps.set_postfix(loss=f"{loss:.3f}")
        if t == start + 1:
            _log_estimate(began, last_step, t + 1, config.steps)
        last_step = time.perf_counter()
        if config.eval_every and (t + 1) % config.eval_every == 0 and t + 1 < config.steps:
            point = _held_out(model, params, trained, config, eval_windows, masks)
            history["eval"].append([t + 1, point])
        if directory is not None and config.save_every and (t + 1) % config.save_every == 0:
            save_state(directory, config, trained, opt_state, t + 1, history)
        if on_step is not None:
            on_step(t + 1, loss)
    seconds = time.perf_counter() - began
    final = _like(_effective(params, trained, config, masks), params)
    report = _report(model, final, config, history, windows, eval_windows, seconds)
    return RecoverResult(final, trained if config.method == "lora" else None, report)


def _log_estimate(began: float, step_began: float, done: int, steps: int) -> None:
    """After the second step (the first one compiles): the time the whole run will take."""
    per_step = time.perf_counter() - step_began
    total = (time.perf_counter() - began) + per_step * (steps - done)
    info(
        "recover: %.1f s per step after compiling; estimated total %s for %d steps",
        per_step,
        _duration(total),
        steps,
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _placer(mesh: Any) -> Callable:
    if mesh is None:
        return lambda tree, batch=False: tree
    from jax.sharding import NamedSharding, PartitionSpec

    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec(None, "data", None))
    return lambda tree, batch=False: jax.device_put(tree, split if batch else replicated)


def _report(model, final, config, history, windows, eval_windows, seconds):
    history["eval"].append([config.steps, _evaluate(model, final, eval_windows, config)])
    report = {
        "method": config.method,
        "steps": config.steps,
        "tokens": config.steps * config.batch_size * config.grad_accum * int(windows.shape[1]),
        "seqlen": int(windows.shape[1]),
        "seconds": seconds,
        "loss": history["loss"],
        "eval": history["eval"],
        "config": config.to_dict(),
    }
    return report


__all__ = [
    "RECOVERY_METHODS",
    "ZERO_MASK_FRACTION",
    "RecoverConfig",
    "RecoverResult",
    "batch_at",
    "make_loss",
    "make_step",
    "recover",
    "zero_masks",
]

# Old names, kept for a while: each warns and gives the new one.
__getattr__ = renamed(__name__, {"METHODS": "RECOVERY_METHODS"})
