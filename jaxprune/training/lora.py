"""LoRA as a separate params pytree: ``W x`` becomes ``W x + s · B(A(dropout(x)))``.

The base params are never touched. ``init_lora`` makes the adapter tree (``A`` random, ``B`` zero,
so training starts from the base model); :func:`lora_logits` runs the model with the adapters
*unmerged* — each targeted linear computes ``x W + s · (drop(x) A) B`` — so a sparse base stays
sparse and its adapters stay dense; :func:`merge` folds them into the kernels::

    cfg = LoraConfig(rank=8, alpha=16)                     # targets: the family's seven linears
    lora = init_lora(model, params, cfg, jax.random.key(0))
    logits = lora_logits(model, params, lora, tokens, cfg)
    merged = merge(params, lora, cfg)                       # W + s·AB (dense or shrunk models)
    kept = merge(params, lora, cfg, masks=masks)            # M ⊙ (W + s·AB): stays as sparse
    base = unmerge(merged, lora, cfg)                       # W again (up to rounding)

``s = alpha / rank``. Kernels are Flax ``(in, out)``: ``A`` is ``(in, rank)``, ``B``
``(rank, out)``, so ``A @ B`` has the kernel's shape. The adapter tree mirrors the params'
nesting (``lora["layers"][3]["mlp"]["up_proj"]["kernel"] == {"a": A, "b": B}``), so it saves and
restores like any params.

A mask-keeping merge is what an unstructured or N:M model needs to stay that sparse; it is not the
unmerged model (the low-rank update's pruned entries are dropped), and what that costs is measured
by comparing :func:`lora_logits` (or the plain merge) against the masked merge
(``benchmarks/recovery.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune.core.config import ConfigIO
from jaxprune.core.paths import Tree, flat_leaves, get_leaf, nest, select_paths, set_leaves
from jaxprune.training.masked import mask_lookup


@dataclasses.dataclass(frozen=True)
class LoraConfig(ConfigIO):
    """What gets adapters, and how large they are.

    Attributes:
      rank: the adapters' rank ``r`` (> 0).
      alpha: scale numerator; the update is ``alpha / rank · A B``.
      dropout: dropout rate on the adapters' input during training, in ``[0, 1)``.
      targets: regexes of the kernel paths that get adapters (``None``: the model family's
        default targets, the seven linears of each LLaMA block).
      ignore: regexes of paths to leave alone.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: str | tuple[str, ...] | None = None
    ignore: str | tuple[str, ...] = ()

    NAME = "LoRA config"

    def __post_init__(self):
        for name in ("targets", "ignore"):  # lists (YAML) become tuples: the config is hashable
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise ValueError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be positive, got {self.alpha}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def target_paths(model: Any, params: Tree, config: LoraConfig) -> list[str]:
    """The 2-D kernel paths that get adapters.

    Raises:
      ValueError: a target regex matches nothing, or matches a leaf that is not a 2-D kernel.
    """
    targets = config.targets if config.targets is not None else model.family.default_targets
    paths = select_paths(params, targets, config.ignore)
    flat = flat_leaves(params)
    bad = [p for p in paths if not p.endswith("kernel") or jnp.ndim(flat[p]) != 2]
    if bad:
        raise ValueError(f"LoRA targets must be 2-D linear kernels; {bad[:3]} are not")
    if not paths:
        raise ValueError(f"LoRA targets {targets!r} leave nothing after ignore={config.ignore!r}")
    return paths


def adapters(lora: Tree) -> dict[str, tuple[jax.Array, jax.Array]]:
    """``{kernel path: (A, B)}`` of an adapter tree."""
    flat = flat_leaves(lora)
    return {
        p[: -len("/a")]: (v, flat[p[: -len("/a")] + "/b"])
        for p, v in flat.items()
        if p.endswith("/a")
    }


def init_lora(
    model: Any, params: Tree, config: LoraConfig, key: jax.Array, dtype: Any = jnp.float32
) -> dict:
    """A fresh adapter tree: ``A`` uniform in ``±1/sqrt(in)`` (PEFT's Kaiming init), ``B = 0``."""
    paths = target_paths(model, params, config)
    flat = {}
    for i, path in enumerate(paths):
        d_in, d_out = jnp.shape(get_leaf(params, path))
        bound = 1.0 / d_in**0.5
        a = jax.random.uniform(
            jax.random.fold_in(key, i), (d_in, config.rank), dtype, -bound, bound
        )
        flat[path + "/a"] = a
        flat[path + "/b"] = jnp.zeros((config.rank, d_out), dtype)
    return nest(flat)


def delta(lora: Tree, config: LoraConfig) -> dict[str, jax.Array]:
    """``{kernel path: s · A B}`` (float32 products, cast to ``A``'s dtype)."""
    return {
        path: (config.scale * (a.astype(jnp.float32) @ b.astype(jnp.float32))).astype(a.dtype)
        for path, (a, b) in adapters(lora).items()
    }


def merge(
    params: Tree, lora: Tree, config: LoraConfig, *, masks: Tree | Mapping[str, Any] | None = None
) -> Tree:
    """``W + s·AB`` for every adapted kernel; with ``masks``, ``M ⊙ (W + s·AB)`` where masked.

    Args:
      params: the base params (nested dicts), unchanged.
      lora: the adapter tree.
      config: its config (for the scale).
      masks: keep-masks (params-like with ``None`` where unpruned, or ``{path: keep}``): a masked
        kernel keeps exactly its zeros. ``None``: a plain merge (dense, or structurally shrunk,
        models).

    Returns:
      New params; every leaf without an adapter is shared with ``params``.
    """
    keep = mask_lookup(masks) if masks is not None else {}
    out = {}
    for path, update in delta(lora, config).items():
        kernel = get_leaf(params, path)
        if update.shape != kernel.shape:
            raise ValueError(
                f"adapter of {path!r} has shape {update.shape}, the kernel {kernel.shape}"
            )
        merged = kernel + update.astype(kernel.dtype)
        if path in keep:
            merged = jnp.where(keep[path], merged, jnp.zeros_like(merged))
        out[path] = merged
    return set_leaves(params, out)


def unmerge(params: Tree, lora: Tree, config: LoraConfig, *, masks: Tree | None = None) -> Tree:
    """Undoes :func:`merge`: ``W' - s·AB`` (``M ⊙ (W' - s·AB)`` with ``masks``).

    A base whose pruned entries are zero comes back exactly from a mask-keeping merge too.
    """
    keep = mask_lookup(masks) if masks is not None else {}
    out = {}
    for path, update in delta(lora, config).items():
        kernel = get_leaf(params, path)
        base = kernel - update.astype(kernel.dtype)
        if path in keep:
            base = jnp.where(keep[path], base, jnp.zeros_like(base))
        out[path] = base
    return set_leaves(params, out)


class _AdaptedLinear:
    """``base(x) + s · ((drop(x) A) B)``: the unmerged LoRA linear (a callable, not a module)."""

    def __init__(self, base, a, b, scale: float, dropout: float, key: jax.Array | None):
        self.base, self.a, self.b, self.scale = base, a, b, scale
        self.dropout, self.key = dropout, key

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        if self.key is not None and self.dropout > 0:
            keep = jax.random.bernoulli(self.key, 1.0 - self.dropout, x.shape)
            h = jnp.where(keep, x / (1.0 - self.dropout), jnp.zeros_like(x))
        low = (h.astype(self.a.dtype) @ self.a) @ self.b
        return self.base(x) + (self.scale * low).astype(x.dtype)


def _module_at(module: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def lora_logits(
    model: Any,
    params: Tree,
    lora: Tree,
    tokens: jax.Array,
    config: LoraConfig,
    *,
    dropout_key: jax.Array | None = None,
) -> jax.Array:
    """Logits of the base model with unmerged adapters (dropout only when ``dropout_key``).

    Each adapted linear (path ``.../<name>/kernel``) of the NNX module built from ``params`` is
    wrapped in place, inside the caller's trace, so the base kernels are used as they are.
    """
    module = model.module(params)
    for i, (path, (a, b)) in enumerate(sorted(adapters(lora).items())):
        *parents, name, _ = path.split("/")
        owner = _module_at(module, parents)
        key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
        setattr(
            owner,
            name,
            _AdaptedLinear(getattr(owner, name), a, b, config.scale, config.dropout, key),
        )
    return module(tokens)


__all__ = [
    "LoraConfig",
    "adapters",
    "delta",
    "init_lora",
    "lora_logits",
    "merge",
    "target_paths",
    "unmerge",
]
