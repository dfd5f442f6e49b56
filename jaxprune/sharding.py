"""Pruning on many devices: a ``("data", "model")`` mesh, parameter layouts and sharded solvers.

Sharding is a property of the arrays, not of the code: :func:`jaxprune.prune` with ``mesh=`` runs
the same calibration steps and solvers as on one device, on arrays placed by a :class:`Layout`::

    import jaxprune as jp
    from jaxprune import sharding

    mesh = sharding.make_mesh(sharding.parse_mesh("2x4"))     # 2-way data, 4-way model
    result = jp.prune(model, params, windows, recipe, mesh=mesh)

How each part is distributed, and why:

* **Parameters** follow partition rules, regular expressions over leaf paths that each model
  family declares (``model.family.partition_rules``, e.g.
  ``jaxprune.models.llama.PARTITION_RULES``). Every prunable kernel ``(in, out)`` is split along
  its output columns over ``model``: this is a layout for pruning, not for serving. SparseGPT's and
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
  inside ``shard_map`` (:func:`jaxprune.methods.sparsegpt.solve_sharded`): the Cholesky factor of
  ``H⁻¹`` is computed on every device from the replicated Hessian, each device sweeps its own
  columns, and the reference's unstructured mask — the ⌊s·count⌋ smallest scores of a whole block
  of inputs across *all* outputs — stays exact with
  :func:`jaxprune.core.select.smallest_mask_sharded`, a bisection for the global k-th score whose
  counts are summed over the devices (SparseGPT's N:M masks are chosen per column, with no
  communication). Wanda and magnitude choose per output column (or, for magnitude's unstructured
  masks, by one threshold that the compiled program reduces across devices), so they run
  unchanged on the sharded kernel.
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
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxprune.core.paths import leaf_paths

DATA, MODEL = "data", "model"
AXES = (DATA, MODEL)

# (path regex, spec) pairs; the first whose regex matches a whole leaf path places that leaf. Model
# families declare theirs with the axis names as plain strings ("model"), so they need no import of
# this module.
Rules = tuple[tuple[str, PartitionSpec], ...]


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
            for path, leaf in zip(leaf_paths(tree), leaves, strict=True)
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


def place_like(tree: Any, reference: Any) -> Any:
    """``tree``'s arrays placed like ``reference`` when that is on a mesh, else unchanged."""
    sharding = getattr(reference, "sharding", None)
    return jax.device_put(tree, sharding) if isinstance(sharding, NamedSharding) else tree


__all__ = [
    "AXES",
    "DATA",
    "MODEL",
    "Layout",
    "Rules",
    "check_mesh",
    "make_mesh",
    "parse_mesh",
    "partition_spec",
    "place_like",
    "shard_params",
]
