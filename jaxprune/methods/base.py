"""The method registry and the small selection primitives the solvers share.

A method is a pure function of one kernel (Flax layout ``(in, out)``), the statistics of its
inputs and a sparsity target, returning ``(new_kernel, keep_mask)``; :class:`Method` names it and
says which statistics it needs, so the engine can skip work (no calibration pass for magnitude, no
``XᵀX`` for Wanda).
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxprune.sparsity import NM, Target, Unstructured

PruneFn = Callable[..., tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered pruning method.

    Attributes:
      name: the registry key (``"sparsegpt"``).
      needs_hessian: whether ``prune`` reads ``stats.hessian`` (then the engine accumulates
        ``XᵀX``).
      prune: ``prune(kernel, stats, target, **options) -> (kernel, keep_mask)``; ``stats`` is a
        :class:`jaxprune.methods.statistics.LinearStats` or ``None`` when ``needs_inputs`` is false.
      options: the keyword options ``prune`` accepts, with their defaults.
      needs_inputs: whether ``prune`` reads calibration statistics at all.
      mlp_solver: for joint methods (SparseLLM), ``mlp_solver(kernels, x, y, targets, *, kind,
        biases, **options)`` that prunes a whole MLP from its inputs ``x`` and dense outputs
        ``y``; the engine then calls ``prune`` only for the other linears.
      prune_on_mesh: ``prune_on_mesh(kernel, stats, target, layout, **options)`` for a kernel
        split by output columns over a :class:`jaxprune.sharding.Layout`, for methods whose mask
        couples the columns (SparseGPT's per-block selection); ``None`` when ``prune`` gives the
        single-device result as it is on sharded arrays (per-column choices, or thresholds the
        compiler reduces across devices).
    """

    name: str
    needs_hessian: bool
    prune: PruneFn
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    needs_inputs: bool = True
    mlp_solver: Callable[..., Any] | None = None
    prune_on_mesh: Callable[..., tuple[jax.Array, jax.Array]] | None = None

    def __post_init__(self):
        if self.needs_hessian and not self.needs_inputs:
            raise ValueError(f"method {self.name!r}: a method that needs a Hessian needs inputs")
        # Read-only, so that a shared registry entry cannot be changed by one caller.
        object.__setattr__(self, "options", types.MappingProxyType(dict(self.options)))

    def resolve_options(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The defaults updated by ``overrides``; ``ValueError`` naming any unknown option."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.options))
        if unknown:
            known = sorted(self.options) or "none"
            raise ValueError(
                f"method {self.name!r} has no options {unknown}; known options: {known}"
            )
        return {**self.options, **overrides}


METHODS: dict[str, Method] = {}


def register_method(method: Method, *, overwrite: bool = False) -> Method:
    """Adds ``method`` to :data:`METHODS` under ``method.name`` and returns it.

    Raises:
      ValueError: the name is taken and ``overwrite`` is false.
    """
    if method.name in METHODS and not overwrite:
        raise ValueError(
            f"a method named {method.name!r} is already registered; "
            "pass overwrite=True to replace it"
        )
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown pruning method {name!r}; known methods: {sorted(METHODS)}"
        ) from None


def num_pruned(sparsity: float, size: int) -> int:
    """⌊sparsity·size⌋, robust to float artefacts (``0.57 * 100 == 56.99…`` still gives 57)."""
    return math.floor(round(sparsity * size, 6))


def order_keys(scores: jax.Array) -> jax.Array:
    """uint32 keys ordered like the float32 values (the radix-sort trick: flip negatives)."""
    bits = lax.bitcast_convert_type(scores.astype(jnp.float32), jnp.uint32)
    negative = (bits >> 31) == 1
    return jnp.where(negative, ~bits, bits | jnp.uint32(1 << 31))


def smallest_mask(scores: jax.Array, k: int | jax.Array, axis: int | None = None) -> jax.Array:
    """True at the ``k`` smallest entries along ``axis`` (of all entries when ``None``).

    Ties are broken by position, the lower index first, exactly like taking the first ``k`` of a
    stable argsort (values are ordered as float32; NaN counts as largest). ``k`` may be traced, so
    one compiled program serves every sparsity.

    No sort: the k-th smallest value is found by bisection over the 32-bit keys of the values, 32
    counting passes, each O(size) — about 10× faster than ``jnp.sort`` on CPU for a layer.
    """
    if axis is None:
        return smallest_mask(scores.reshape(-1), k, axis=0).reshape(scores.shape)
    keys = order_keys(scores)
    k = jnp.asarray(k, jnp.int32)
    shape = list(keys.shape)
    shape[axis] = 1

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(keys <= mid, axis=axis, keepdims=True) >= k
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    # Invariant: the smallest key t with #(keys <= t) >= k lies in [lo, hi].
    bounds = (jnp.zeros(shape, jnp.uint32), jnp.full(shape, 0xFFFFFFFF, jnp.uint32))
    kth, _ = lax.fori_loop(0, 32, halve, bounds)
    below = keys < kth
    at = keys == kth
    room = k - jnp.sum(below, axis=axis, keepdims=True)
    # Among the entries equal to the k-th value, the first `room` in index order are selected.
    rank_at = jnp.cumsum(at, axis=axis) - 1
    return (below | (at & (rank_at < room))) & (k > 0)


def nm_prune_mask(scores: jax.Array, n: int, m: int) -> jax.Array:
    """True at the ``m - n`` smallest scores of every ``m`` consecutive entries along axis 0."""
    d_in = scores.shape[0]
    if d_in % m:
        raise ValueError(
            f"an {n}:{m} pattern needs the input dimension to be a multiple of {m}, got {d_in}; "
            "use an unstructured target for this layer"
        )
    groups = scores.reshape(d_in // m, m, *scores.shape[1:])
    return smallest_mask(groups, m - n, axis=1).reshape(scores.shape)


def check_kernel(kernel: jax.Array, method: str) -> None:
    """``ValueError`` unless ``kernel`` is a 2-D floating ``(in, out)`` matrix."""
    if kernel.ndim != 2 or not jnp.issubdtype(kernel.dtype, jnp.floating):
        raise ValueError(
            f"{method} prunes 2-D floating (in, out) kernels, got shape {kernel.shape} "
            f"of dtype {kernel.dtype}; reshape convolution kernels to (fan_in, out) first"
        )


def check_target(target: Target, method: str) -> None:
    """``ValueError`` unless ``target`` is an :class:`Unstructured` or :class:`NM` value."""
    if not isinstance(target, Unstructured | NM):
        raise ValueError(
            f"{method} needs a target Unstructured(s) or NM(n, m) (see jaxprune.sparsity."
            f"parse_target), got {target!r}"
        )
