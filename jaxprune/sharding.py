"""Pruning on many devices: a ``("data", "model")`` mesh, parameter layouts and sharded solvers.

Sharding is a property of the arrays, not of the code: :func:`jaxprune.prune` with ``mesh=`` runs
the same calibration steps and solvers as on one device, on arrays placed by a :class:`Layout`::

    import jaxprune as jp
    from jaxprune import sharding

    mesh = sharding.make_mesh(sharding.parse_mesh("2x4"))     # 2-way data, 4-way model
    result = jp.prune(model, params, windows, recipe, mesh=mesh)

How each part is distributed, and why:

* **Parameters** follow partition rules, regular expressions over leaf paths
  (:data:`LLAMA_RULES`, :data:`OPT_RULES`). Every prunable kernel ``(in, out)`` is split along its
  output columns over ``model``: this is a layout for pruning, not for serving. SparseGPT's and
  Wanda's work per output column is independent, so the solvers read each kernel where it lies;
  the forward passes pay all-gathers of activations between linears, which XLA inserts. A dimension
  the mesh axes do not divide stays whole (replicated), so any model runs on any mesh.
* **Calibration statistics are data-parallel by sharding propagation**, not by an explicit
  ``psum``: each batch of windows is split over ``data`` and the statistics are constrained to be
  replicated, so the token contraction of ``XᵀX`` (and of the squared column norms) compiles to
  per-device partial sums plus an all-reduce that XLA places. We chose this over ``shard_map``
  because the block's forward pass is ordinary model code: the one compiled step serves one device
  and any mesh, needs no per-device view of attention, and its statistics keep the single-device
  meaning (global token counts for SparseGPT's running mean).
* **Solvers** split a kernel's output columns over every device of the mesh (``data`` and
  ``model`` together; ``model`` alone, or nothing, when the columns do not divide). SparseGPT runs
  inside ``shard_map``: the Cholesky factor of ``H⁻¹`` is computed on every device from the
  replicated Hessian, each device sweeps its own columns, and the reference's unstructured mask —
  the ⌊s·count⌋ smallest scores of a whole block of inputs across *all* outputs — stays exact with
  :func:`smallest_mask_sharded`, a bisection for the global k-th score whose counts are summed over
  the devices (SparseGPT's N:M masks are chosen per column, with no communication). Wanda and
  magnitude choose per output column (or, for magnitude's unstructured masks, by one threshold
  that the compiled program reduces across devices), so they run unchanged on the sharded kernel.
* **Host offload** (``prune(..., offload=True)``): the params stay host NumPy arrays and one
  block at a time is put on the devices; block ``i + 1`` is put (an asynchronous copy where the
  platform allows) before block ``i`` is solved, so the copy overlaps the work.

Multi-host: call ``jax.distributed.initialize()`` (coordinator address, process count and id from
the arguments or the cluster's environment) in every process before anything else touches JAX.
:func:`make_mesh` then spans the devices of all processes, and each process passes *its own share*
of the calibration windows to :func:`jaxprune.prune` (e.g. windows ``p::process_count`` of the
corpus); :meth:`Layout.windows` assembles the global array with
``jax.make_array_from_process_local_data``. Every process runs the same program. This path has
only been exercised with a single process here, and host offload is single-process (it gathers
each pruned block into one host's memory).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxprune import masks
from jaxprune.methods import Method, sparsegpt
from jaxprune.methods import statistics as stats_lib
from jaxprune.methods.base import order_keys
from jaxprune.sparsity import Target

DATA, MODEL = "data", "model"
AXES = (DATA, MODEL)

Rules = tuple[tuple[str, PartitionSpec], ...]

# Prunable kernels split along their outputs (see the module docstring); the embedding table and
# LM head by vocabulary, as tensor-parallel decoders do; norms replicated (no rule).
LLAMA_RULES: Rules = (
    (
        r"layers/\d+/(self_attn/(q|k|v|o)_proj|mlp/(gate|up|down)_proj)/kernel",
        PartitionSpec(None, MODEL),
    ),
    (r"embed_tokens/embedding", PartitionSpec(MODEL, None)),
    (r"lm_head/kernel", PartitionSpec(None, MODEL)),
)
OPT_RULES: Rules = (
    (r"layers/\d+/(self_attn/(q|k|v|out)_proj|fc1|fc2)/kernel", PartitionSpec(None, MODEL)),
    (r"layers/\d+/(self_attn/(q|k|v|out)_proj|fc1|fc2)/bias", PartitionSpec(MODEL)),
    (r"embed_tokens/embedding", PartitionSpec(MODEL, None)),
)
DEFAULT_RULES: dict[str, Rules] = {"llama": LLAMA_RULES, "opt": OPT_RULES}


def parse_mesh(text: str) -> tuple[int, int]:
    """``"2x4"`` → ``(2, 4)``: the (data, model) shape of a mesh, as the CLI writes it.

    Raises:
      ValueError: anything but two positive integers joined by ``x``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if match is None or 0 in (int(match[1]), int(match[2])):
        raise ValueError(
            f"mesh shape {text!r} is not DATAxMODEL with positive integers, e.g. '8x1' or '2x4'"
        )
    return int(match[1]), int(match[2])


def make_mesh(
    shape: tuple[int, int] | None = None, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A mesh with axes ``("data", "model")`` over ``devices`` (default: every device).

    Args:
      shape: ``(data, model)``; ``None`` puts every device on ``data`` (the forward passes are
        then purely data-parallel, and solvers still split columns over all devices).
      devices: the devices, in mesh order; default ``jax.devices()`` (all processes' devices).

    Returns:
      A :class:`jax.sharding.Mesh` with automatic (compiler-propagated) axes.

    Raises:
      ValueError: the shape does not use exactly the given devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = (len(devices), 1) if shape is None else tuple(shape)
    if len(shape) != 2 or any(int(s) <= 0 for s in shape):
        raise ValueError(f"a mesh shape is (data, model) with positive sizes, got {shape}")
    if shape[0] * shape[1] != len(devices):
        raise ValueError(
            f"a {shape[0]}x{shape[1]} mesh needs {shape[0] * shape[1]} devices, but "
            f"{len(devices)} are available; choose data·model = {len(devices)}"
        )
    grid = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(grid, AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def check_mesh(mesh: Mesh) -> None:
    """``ValueError`` unless ``mesh`` has exactly the axes ``("data", "model")``."""
    if tuple(mesh.axis_names) != AXES:
        raise ValueError(
            f"jaxprune needs a mesh with axes {AXES}, got {tuple(mesh.axis_names)}; build one "
            "with jaxprune.sharding.make_mesh((data, model))"
        )


def rules_for(family: str) -> Rules:
    """The default partition rules of a model family (``"llama"``, ``"opt"``)."""
    if family not in DEFAULT_RULES:
        raise ValueError(
            f"no default partition rules for model family {family!r} (known: "
            f"{sorted(DEFAULT_RULES)}); pass rules=((path_regex, PartitionSpec), ...)"
        )
    return DEFAULT_RULES[family]


def _axis_size(mesh_shape: Mapping[str, int], entry: Any) -> int:
    names = entry if isinstance(entry, tuple) else (entry,)
    return int(np.prod([mesh_shape[name] for name in names]))


def partition_spec(
    path: str, shape: Sequence[int], rules: Rules, mesh: Mesh | jax.sharding.AbstractMesh
) -> PartitionSpec:
    """The spec of the leaf at ``path``: the first rule whose regex matches the whole path.

    Dimensions that the rule's mesh axes do not divide are left whole, and a leaf no rule matches
    is replicated.
    """
    for pattern, spec in rules:
        if re.fullmatch(pattern, path):
            if len(spec) > len(shape):
                raise ValueError(
                    f"partition rule {pattern!r} → {spec} has more dimensions than the leaf "
                    f"{path!r} of shape {tuple(shape)}"
                )
            mesh_shape = dict(mesh.shape)
            entries = [
                entry if entry is None or dim % _axis_size(mesh_shape, entry) == 0 else None
                for entry, dim in zip(spec, shape, strict=False)
            ]
            return PartitionSpec(*entries)
    return PartitionSpec()


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the arrays of one prune live: a ``("data", "model")`` mesh and partition rules."""

    mesh: Mesh
    rules: Rules

    def __post_init__(self):
        check_mesh(self.mesh)

    @property
    def data_size(self) -> int:
        return int(self.mesh.shape[DATA])

    @property
    def batch(self) -> NamedSharding:
        """Leading (window) axis split over ``data``, the rest whole."""
        return NamedSharding(self.mesh, PartitionSpec(DATA))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def sharding(self, path: str, shape: Sequence[int]) -> NamedSharding:
        """The :class:`NamedSharding` of the leaf at ``path`` (a path from the params root)."""
        return NamedSharding(self.mesh, partition_spec(path, shape, self.rules, self.mesh))

    def put(self, tree: Any, prefix: str = "") -> Any:
        """``tree`` (nested dicts) with every leaf placed on the mesh by the rules.

        Args:
          tree: params, or a subtree of them whose leaves sit at ``prefix + relative path``
            (a decoder block: ``prefix="layers/3/"``).
          prefix: the path of ``tree`` inside the params.

        Returns:
          The same structure with :class:`jax.Array` leaves (copies are asynchronous).
        """
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        placed = [
            jax.device_put(leaf, self.sharding(prefix + path, np.shape(leaf)))
            for path, leaf in zip(masks.leaf_paths(tree), leaves, strict=True)
        ]
        return jax.tree_util.tree_unflatten(treedef, placed)

    def windows(self, tokens: np.ndarray | jax.Array) -> jax.Array:
        """Calibration tokens as one global array split over ``data``.

        In a multi-process run ``tokens`` are this process's share (the same number of windows in
        every process); the result holds the windows of all processes, in process order.
        """
        tokens = np.asarray(tokens, np.int32)
        total = tokens.shape[0] * jax.process_count()
        if total % self.data_size:
            raise ValueError(
                f"{total} calibration windows cannot be split over a data axis of "
                f"{self.data_size} devices; use a number of windows (nsamples) that is a multiple "
                f"of {self.data_size}"
            )
        if jax.process_count() == 1:
            return jax.device_put(tokens, self.batch)
        return jax.make_array_from_process_local_data(self.batch, tokens)

    def solver_axes(self, d_out: int) -> tuple[str, ...]:
        """The mesh axes a solver splits ``d_out`` output columns over (all that divide them)."""
        mesh_shape = dict(self.mesh.shape)
        for axes in (AXES, (MODEL,)):
            size = _axis_size(mesh_shape, axes)
            if size > 1 and d_out % size == 0:
                return axes
        return ()


def shard_params(params: Any, mesh: Mesh, rules: Rules) -> Any:
    """``params`` placed on ``mesh`` by ``rules`` (see :class:`Layout`)."""
    return Layout(mesh, rules).put(params)


def smallest_mask_sharded(
    scores: jax.Array, k: int | jax.Array, axis_name: str | tuple[str, ...]
) -> jax.Array:
    """Inside ``shard_map``: True at the ``k`` smallest of the scores of all devices together.

    The global array is the devices' local ``scores`` flattened and concatenated in the order of
    ``axis_index(axis_name)``; the result equals
    :func:`jaxprune.methods.base.smallest_mask` of that array, ties included (lower global
    position first). Only scalars cross devices: 32 ``psum`` of counts for the bisection of the
    k-th value's 32-bit key, one to count the entries below it, and one ``all_gather`` of each
    device's count of ties, which places its ties after those of the devices before it.

    Args:
      scores: this device's scores (any shape; flattened in C order).
      k: how many to mark in all (a scalar, the same on every device).
      axis_name: the mesh axis or axes the scores are split over.

    Returns:
      A bool mask of ``scores``' shape.
    """
    keys = order_keys(scores).reshape(-1)
    k = jnp.asarray(k, jnp.int32)

    def count(mask: jax.Array) -> jax.Array:
        return lax.psum(jnp.sum(mask, dtype=jnp.int32), axis_name)

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = count(keys <= mid) >= k
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    # Invariant: the smallest key t with #(keys <= t) >= k over all devices lies in [lo, hi].
    kth, _ = lax.fori_loop(0, 32, halve, (jnp.uint32(0), jnp.uint32(0xFFFFFFFF)))
    below = keys < kth
    at = keys == kth
    room = k - count(below)
    ties = lax.all_gather(jnp.sum(at, dtype=jnp.int32), axis_name)
    me = lax.axis_index(axis_name)
    ties_before = jnp.sum(jnp.where(jnp.arange(ties.shape[0]) < me, ties, 0))
    rank_at = ties_before + jnp.cumsum(at) - 1
    return ((below | (at & (rank_at < room))) & (k > 0)).reshape(scores.shape)


@functools.cache
def _select_over(axes: tuple[str, ...]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    # One function object per axes, so that SparseGPT's compiled solver (which takes the selection
    # as a static argument) is reused across kernels.
    return functools.partial(smallest_mask_sharded, axis_name=axes)


@functools.cache
def _sharded_sparsegpt(
    mesh: Mesh, axes: tuple[str, ...], blocksize: int, nm: tuple[int, int] | None
) -> Callable:
    columns = PartitionSpec(None, axes)
    solve = functools.partial(
        sparsegpt._solve,
        blocksize=blocksize,
        nm=nm,
        select=_select_over(axes),
    )
    # check_vma is off: the solver's loops start some carries from constants (the same on every
    # device) that become per-device values, which the check rejects; the specs below state what
    # the program computes.
    return jax.jit(
        jax.shard_map(
            solve,
            mesh=mesh,
            in_specs=(columns, PartitionSpec(), PartitionSpec(), PartitionSpec()),
            out_specs=(columns, columns, PartitionSpec(), PartitionSpec()),
            check_vma=False,
        )
    )


def sparsegpt_kernel(
    kernel: jax.Array,
    hessian: jax.Array,
    target: Target,
    layout: Layout,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[jax.Array, jax.Array]:
    """:func:`jaxprune.methods.sparsegpt.prune_kernel` with the output columns split over devices.

    The result equals the single-device solve (the same masks; weights up to float rounding of
    the per-device matrix products).

    Args:
      kernel: ``(in, out)`` weights (any placement).
      hessian: ``(in, in)`` float32 Hessian of the layer's inputs (replicated on every device).
      target: ``Unstructured(s)`` or ``NM(n, m)``.
      layout: the mesh; columns go over :meth:`Layout.solver_axes`.
      blocksize, percdamp: as in :func:`jaxprune.methods.sparsegpt.prune_kernel`.

    Returns:
      ``(pruned kernel, keep mask)``, both split by columns over the solver axes.
    """
    kernel, hessian, counts, blocksize, nm = sparsegpt.solver_inputs(
        kernel, hessian, target, blocksize=blocksize, percdamp=percdamp
    )
    axes = layout.solver_axes(kernel.shape[1])
    if axes:
        solve = _sharded_sparsegpt(layout.mesh, axes, blocksize, nm)
    else:
        solve = functools.partial(sparsegpt._solve, blocksize=blocksize, nm=nm)
    new_kernel, keep, finite, damping = solve(kernel, hessian, counts, jnp.float32(percdamp))
    sparsegpt.check_solution(finite, damping, percdamp)
    return new_kernel, keep


def prune_kernel(
    method: Method,
    kernel: jax.Array,
    stats: stats_lib.LinearStats | None,
    target: Target,
    layout: Layout,
    **options: Any,
) -> tuple[jax.Array, jax.Array]:
    """``method.prune`` on a kernel of a sharded model; results keep the kernel's placement.

    A method whose mask couples output columns has a ``prune_on_mesh`` (SparseGPT, and
    SparseLLM's per-kernel step, run :func:`sparsegpt_kernel`); every other method chooses per
    output column or by a threshold the compiled program reduces across devices, so its ``prune``
    runs as it is on the sharded arrays.

    Args:
      method: a registered :class:`jaxprune.methods.Method`.
      kernel: ``(in, out)`` weights placed by ``layout``.
      stats: the statistics of the kernel's inputs (replicated), or ``None`` for magnitude.
      target: the sparsity target.
      layout: the mesh and rules of the model.
      **options: the method's options.

    Returns:
      ``(pruned kernel, keep mask)`` with the sharding of ``kernel``.
    """
    if method.prune_on_mesh is not None:
        new_kernel, keep = method.prune_on_mesh(kernel, stats, target, layout, **options)
    else:
        new_kernel, keep = method.prune(kernel, stats, target, **options)
    return place_like((new_kernel, keep), kernel)


def place_like(tree: Any, reference: Any) -> Any:
    """``tree``'s arrays placed like ``reference`` when that is on a mesh, else unchanged."""
    sharding = getattr(reference, "sharding", None)
    return jax.device_put(tree, sharding) if isinstance(sharding, NamedSharding) else tree


__all__ = [
    "AXES",
    "DATA",
    "DEFAULT_RULES",
    "LLAMA_RULES",
    "MODEL",
    "OPT_RULES",
    "Layout",
    "Rules",
    "check_mesh",
    "make_mesh",
    "parse_mesh",
    "partition_spec",
    "place_like",
    "prune_kernel",
    "rules_for",
    "shard_params",
    "smallest_mask_sharded",
    "sparsegpt_kernel",
]
