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

Multi-host: every process calls :func:`jaxprune.distributed.initialize` before anything else
touches JAX and then runs the same program. :func:`make_mesh` spans the devices of all processes;
:func:`global_windows` turns the calibration windows (the same in every process: they are cut
from a seed) into one array of which each process keeps only the rows its devices hold, and
:meth:`Layout.put` places each leaf from the host copy a process has (or, with
:func:`jaxprune.models.loaders.sliced.load_sliced`, only the slices its devices hold). With host
offload every process keeps its own shards of every block on the host
(:meth:`Layout.to_host`) and moves one block at a time. ``docs/design.md`` says what each process
holds and when the processes communicate.
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
            _put_leaf(leaf, self.sharding(prefix + path, _shape(leaf)))
            for path, leaf in zip(leaf_paths(tree), leaves, strict=True)
        ]
        return jax.tree_util.tree_unflatten(treedef, placed)

    def windows(self, tokens: np.ndarray | jax.Array) -> jax.Array:
        """Calibration tokens as one global array split over ``data``.

        ``tokens`` are all the windows (the same in every process), or an array already made by
        :func:`global_windows`; in a multi-process run each process keeps only its rows.
        """
        total = int(np.shape(tokens)[0])
        if total % self.data_size:
            raise ValueError(
                f"{total} calibration windows cannot be split over a data axis of "
                f"{self.data_size} devices; use a number of windows (nsamples) that is a multiple "
                f"of {self.data_size}"
            )
        if isinstance(tokens, jax.Array):
            return jax.device_put(tokens.astype(np.int32), self.batch)
        return global_windows(self.mesh, tokens)

    def to_host(self, tree: Any) -> Any:
        """``tree``'s arrays copied to host memory: whole NumPy arrays in one process, and in a
        multi-process run :class:`HostShards` holding only the shards this process addresses."""
        if jax.process_count() == 1:
            return jax.device_get(tree)
        return jax.tree.map(_host_leaf, tree)

    def solver_axes(self, d_out: int) -> tuple[str, ...]:
        """The mesh axes a solver splits ``d_out`` output columns over (all that divide them)."""
        mesh_shape = dict(self.mesh.shape)
        for axes in (AXES, (MODEL,)):
            size = _axis_size(mesh_shape, axes)
            if size > 1 and d_out % size == 0:
                return axes
        return ()


def process_rows(sharding: jax.sharding.Sharding, shape: Sequence[int]) -> np.ndarray:
    """The indices along axis 0 of an array of ``shape`` that this process's devices hold."""
    rows: set[int] = set()
    for index in sharding.addressable_devices_indices_map(tuple(shape)).values():
        rows.update(range(*index[0].indices(shape[0])) if index else range(shape[0]))
    return np.asarray(sorted(rows), dtype=np.int64)


def global_windows(mesh: Mesh, tokens: np.ndarray) -> jax.Array:
    """All calibration windows as one array split over ``data``; this process keeps only its rows.

    ``tokens`` must be the same ``(n, seqlen)`` windows in every process (they are cut from a
    seed); the result holds them in their order, as the single-process array would.
    """
    tokens = np.asarray(tokens, np.int32)
    batch = NamedSharding(mesh, PartitionSpec(DATA))
    if jax.process_count() == 1:
        return jax.device_put(tokens, batch)
    rows = process_rows(batch, tokens.shape)
    return jax.make_array_from_process_local_data(batch, tokens[rows], tokens.shape)


@dataclasses.dataclass(frozen=True)
class HostShards:
    """One array of a multi-process run in host memory: only the shards this process addresses.

    :meth:`Layout.put` puts it back on the devices (each process its own shards), so offloaded
    blocks never pass through one host whole.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    shards: dict[tuple[tuple[int, int], ...], np.ndarray]
    sharding: jax.sharding.Sharding

    @classmethod
    def of(cls, array: jax.Array) -> HostShards:
        shards = {}
        for shard in array.addressable_shards:
            key = tuple(s.indices(d)[:2] for s, d in zip(shard.index, array.shape, strict=True))
            shards.setdefault(key, np.asarray(shard.data))
        return cls(tuple(array.shape), np.dtype(array.dtype), shards, array.sharding)

    def to_device(self) -> jax.Array:
        """The array back on the devices it was taken from."""
        return jax.make_array_from_callback(self.shape, self.sharding, self.read)

    @property
    def nbytes(self) -> int:
        return sum(shard.nbytes for shard in self.shards.values())

    def read(self, index: tuple[slice, ...]) -> np.ndarray:
        """The block at ``index`` (as :func:`jax.make_array_from_callback` asks for it)."""
        key = tuple(s.indices(d)[:2] for s, d in zip(index, self.shape, strict=True))
        if key in self.shards:
            return self.shards[key]
        raise ValueError(
            f"this process holds no shard {key} of a {self.shape} array; put it back with the "
            "mesh and partition rules it was taken off with"
        )


def _host_leaf(leaf: Any) -> Any:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return HostShards.of(leaf)
    return jax.device_get(leaf)


def _shape(leaf: Any) -> tuple[int, ...]:
    return leaf.shape if isinstance(leaf, HostShards) else np.shape(leaf)


def _put_leaf(leaf: Any, sharding: NamedSharding) -> jax.Array:
    """``leaf`` on the mesh; in a multi-process run each process copies only its own shards from
    the host (a host leaf is then a NumPy array or :class:`HostShards`)."""
    if isinstance(leaf, HostShards):
        return jax.make_array_from_callback(leaf.shape, sharding, leaf.read)
    if jax.process_count() == 1 or (isinstance(leaf, jax.Array) and not leaf.is_fully_addressable):
        return jax.device_put(leaf, sharding)
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def on_devices(tree: Any) -> Any:
    """``tree`` with every :class:`HostShards` leaf back on its devices, other leaves as is."""
    return jax.tree.map(
        lambda leaf: leaf.to_device() if isinstance(leaf, HostShards) else leaf, tree
    )


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
    "HostShards",
    "check_mesh",
    "global_windows",
    "make_mesh",
    "on_devices",
    "parse_mesh",
    "partition_spec",
    "place_like",
    "process_rows",
    "shard_params",
]
