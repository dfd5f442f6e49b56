"""The layer-sequential calibration engine.

For each decoder block, in order:

1. run the block on the current hidden states of every calibration window, capturing the inputs of
   its linears ("taps") and accumulating float32 statistics per tap, batch by batch;
2. prune every targeted linear of the block with the method (one solve per kernel);
3. run the block again with the pruned weights to produce the next block's inputs, so later blocks
   see the inputs of the pruned model (as the SparseGPT and Wanda reference code does).

With ``true_sequential`` step 1-2 repeat per group of linears sharing an input (q/k/v, o, gate/up,
down), each group seeing inputs produced by the already pruned groups before it.

The engine knows models only through :class:`jaxprune.models.LanguageModel` and methods only through
the registry in :mod:`jaxprune.methods`. Only one block's activations are processed at a time; the
hidden states of all windows are kept as a list of batches ``(batch, seq, hidden)``.

With ``mesh=`` every array is placed by a :class:`jaxprune.sharding.Layout` (batches of windows
over ``data``, kernels by their output columns over ``model``) and the same steps run on the mesh;
with ``offload=True`` the params stay on the host and one block at a time visits the devices (see
:mod:`jaxprune.sharding`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import allocation, masks, sharding
from jaxprune.methods import Method, get_method
from jaxprune.methods import statistics as stats_lib
from jaxprune.models.base import LanguageModel, Params
from jaxprune.recipes import Recipe
from jaxprune.sparsity import Target, Unstructured


class PruneResult(NamedTuple):
    """Pruned params, keep-masks (params structure, ``None`` where unpruned) and a JSON report."""

    params: Params
    masks: Params
    report: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class _Linear:
    """A targeted kernel inside decoder block ``block``: ``name`` like ``mlp/up_proj``."""

    path: str
    block: int
    name: str
    tap: str

    @property
    def kernel_path(self) -> str:
        return f"{self.name}/kernel"


def _batch_size(n: int, wanted: int, multiple: int = 1) -> int:
    """The largest divisor of ``n`` not above ``wanted`` (one compiled shape, no padding).

    With a ``data`` mesh axis of size ``multiple`` > 1 (which divides ``n``, see
    :meth:`jaxprune.sharding.Layout.windows`) the batch must split evenly over it, so it is the
    largest divisor of ``n`` that is a multiple of ``multiple`` and at most
    ``max(wanted, multiple)``.
    """
    limit = min(n, max(wanted, multiple))
    return max(d for d in range(multiple, limit + 1, multiple) if n % d == 0)


_MLP_IN, _DOWN_IN = "mlp_in", "down_in"


def _locate(model: LanguageModel, paths: Sequence[str]) -> tuple[list[_Linear], list[str]]:
    """Splits target paths into linears of decoder blocks and anything else."""
    tap_of = {name: tap for tap, names in model.family.sequential_groups for name in names}
    linears, others = [], []
    for path in paths:
        parts = path.split("/")
        name = "/".join(parts[2:-1])
        if parts[0] == "layers" and parts[-1] == "kernel" and name in tap_of:
            linears.append(_Linear(path, int(parts[1]), name, tap_of[name]))
        else:
            others.append(path)
    return linears, others


@functools.partial(jax.jit, static_argnames=("model", "taps", "with_output", "batch"))
def _forward_step(
    model: LanguageModel,
    block_params: Params,
    hidden: jax.Array,
    *,
    taps: tuple[str, ...],
    with_output: bool,
    batch: jax.sharding.NamedSharding | None,
):
    """One batch through one block: its output (if wanted) and the inputs of ``taps``."""
    out, captured = model.block(block_params, hidden, capture=True)
    if batch is not None and with_output:
        out = jax.lax.with_sharding_constraint(out, batch)
    return (out if with_output else None), {tap: captured[tap] for tap in taps}


@functools.partial(
    jax.jit, static_argnames=("stat_taps", "error_taps", "collect_taps", "replicated")
)
def _statistics_step(
    taps: dict[str, jax.Array],
    stats: dict[str, stats_lib.LinearStats],
    checks: dict[str, tuple[jax.Array, jax.Array]],
    *,
    stat_taps: tuple[str, ...],
    error_taps: tuple[tuple[str, str], ...],
    collect_taps: tuple[str, ...],
    replicated: jax.sharding.NamedSharding | None,
):
    """Statistics of ``stat_taps`` and output errors of ``checks`` for one batch of tap inputs.

    ``checks[name] = (dense_kernel, pruned_kernel)`` of linear ``name`` reading tap
    ``dict(error_taps)[name]``; returns per-batch sums ‖X(W−Ŵ)‖² and ‖XW‖². The raw inputs of
    ``collect_taps`` come back as float32 ``(tokens, width)`` for joint solvers. On a mesh the
    statistics are constrained to be replicated: the token sums of a data-split batch then compile
    to partial sums and an all-reduce (see :mod:`jaxprune.sharding`).
    """
    new_stats = {tap: stats_lib.accumulate(stats[tap], taps[tap]) for tap in stat_taps}
    if replicated is not None:
        new_stats = jax.lax.with_sharding_constraint(new_stats, replicated)
    errors = {}
    for name, tap in error_taps:
        dense, pruned = checks[name]
        x = taps[tap].reshape(-1, dense.shape[0]).astype(jnp.float32)
        y = x @ dense.astype(jnp.float32)
        diff = y - x @ pruned.astype(jnp.float32)
        errors[name] = (jnp.sum(diff * diff), jnp.sum(y * y))
    collected = {
        tap: taps[tap].reshape(-1, taps[tap].shape[-1]).astype(jnp.float32) for tap in collect_taps
    }
    return new_stats, errors, collected


class _Pass(NamedTuple):
    """What one pass of a block over all windows produced."""

    hidden: list[jax.Array] | None
    stats: dict[str, stats_lib.LinearStats]
    rel_errors: dict[str, float]
    collected: dict[str, jax.Array]


class _BlockRunner:
    """Runs passes of one block over all windows in batches, keeping the timing breakdown.

    ``timings`` gets the seconds of whole passes (``capture_seconds`` for passes that gather
    statistics, ``propagate_seconds`` for those producing the next block's inputs) and, across
    both, of the block's forward computation (``forward_seconds``) and of the statistics, error
    sums and collected inputs computed from its taps (``stats_seconds``).
    """

    def __init__(
        self,
        model: LanguageModel,
        batch_size: int,
        timings: dict[str, float],
        layout: sharding.Layout | None = None,
    ):
        self.model = model
        self.batch_size = batch_size
        self.timings = timings
        self.batch = None if layout is None else layout.batch
        self.replicated = None if layout is None else layout.replicated

    def run(
        self,
        block_params: Params,
        hidden: list[jax.Array],
        stat_taps: dict[str, bool] | None = None,
        checks: dict[str, tuple[str, jax.Array, jax.Array]] | None = None,
        with_output: bool = False,
        collect: tuple[str, ...] = (),
    ) -> _Pass:
        stat_taps = stat_taps or {}
        checks = checks or {}
        start = time.perf_counter()
        # Checks are keyed by position, not by path, so that every block of the same shape reuses
        # one compiled step (a path names its block index).
        ordered = sorted(checks)
        error_taps = tuple((f"c{k}", checks[name][0]) for k, name in enumerate(ordered))
        arrays = {f"c{k}": checks[name][1:] for k, name in enumerate(ordered)}
        taps = tuple(sorted({*stat_taps, *(tap for _, tap in error_taps), *collect}))
        stats = {
            tap: stats_lib.init_stats(self._tap_width(block_params, tap), with_hessian)
            for tap, with_hessian in stat_taps.items()
        }
        if self.replicated is not None:
            stats = jax.device_put(stats, self.replicated)
        outputs, sums = [], {name: [0.0, 0.0] for name in checks}
        collected: dict[str, list[jax.Array]] = {tap: [] for tap in collect}
        for batch in hidden:
            # Synchronising after each step splits the time between forward and statistics.
            t0 = time.perf_counter()
            out, captured = jax.block_until_ready(
                _forward_step(
                    self.model,
                    block_params,
                    batch,
                    taps=taps,
                    with_output=with_output,
                    batch=self.batch,
                )
            )
            t1 = time.perf_counter()
            self.timings["forward_seconds"] += t1 - t0
            if taps:
                stats, errs, raw = jax.block_until_ready(
                    _statistics_step(
                        captured,
                        stats,
                        arrays,
                        stat_taps=tuple(sorted(stat_taps)),
                        error_taps=error_taps,
                        collect_taps=collect,
                        replicated=self.replicated,
                    )
                )
                self.timings["stats_seconds"] += time.perf_counter() - t1
                for tap in collect:
                    collected[tap].append(raw[tap])
                for k, name in enumerate(ordered):
                    num, den = errs[f"c{k}"]
                    sums[name][0] += num
                    sums[name][1] += den
            if with_output:
                outputs.append(out)
        gathered = {tap: jnp.concatenate(parts) for tap, parts in collected.items()}
        key = "propagate_seconds" if with_output else "capture_seconds"
        self.timings[key] += time.perf_counter() - start
        rel_errors = {
            name: float(num) / max(float(den), 1e-30) for name, (num, den) in sums.items()
        }
        return _Pass(outputs if with_output else None, stats, rel_errors, gathered)

    def _tap_width(self, block_params: Params, tap: str) -> int:
        for group_tap, names in self.model.family.sequential_groups:
            if group_tap == tap:
                return masks.get_leaf(block_params, f"{names[0]}/kernel").shape[0]
        raise KeyError(tap)


def _targets_by_path(
    recipe: Recipe, paths: Sequence[str], block_sparsity: dict[int, float] | None
) -> dict[str, Target]:
    alloc = allocation.uniform(paths, recipe.target)
    if block_sparsity is not None:
        alloc = {
            path: Unstructured(block_sparsity[int(path.split("/")[1])])
            if path.startswith("layers/")
            else target
            for path, target in alloc.items()
        }
    if recipe.overrides:
        alloc = allocation.apply_overrides(alloc, dict(recipe.overrides))
    return alloc


def _owl_block_sparsity(
    model: LanguageModel,
    params: Params,
    hidden: list[jax.Array],
    linears: Sequence[_Linear],
    recipe: Recipe,
    runner: _BlockRunner,
    placement: _Placement,
    progress: bool,
) -> tuple[dict[int, float], dict[int, float]]:
    """OWL: a pass over the dense model measuring each block's share of outlier Wanda scores.

    Returns ``(sparsity, outlier ratio)`` per pruned block.
    """
    target = recipe.target
    if not isinstance(target, Unstructured):
        raise ValueError("OWL allocation needs an unstructured sparsity, not an N:M pattern")
    pruned_blocks = sorted({lin.block for lin in linears})
    ratios, sizes = [], []
    blocks = placement.blocks(params)
    for i in _progress(range(model.num_blocks), progress, "OWL outlier pass"):
        bp = next(blocks)
        mine = [lin for lin in linears if lin.block == i]
        taps = {lin.tap: False for lin in mine}
        out, stats, _, _ = runner.run(bp, hidden, stat_taps=taps, with_output=True)
        if mine:
            scores = [
                jnp.abs(masks.get_leaf(bp, lin.kernel_path).astype(jnp.float32))
                * jnp.sqrt(stats[lin.tap].sq_norms)[:, None]
                for lin in mine
            ]
            ratios.append(allocation.outlier_ratio(scores, recipe.owl_m))
            sizes.append(sum(int(s.size) for s in scores))
        hidden = out
    sparsities = allocation.owl_sparsities(
        ratios, target.sparsity, recipe.owl_lambda, sizes=np.asarray(sizes)
    )
    return (
        dict(zip(pruned_blocks, (float(s) for s in sparsities), strict=True)),
        dict(zip(pruned_blocks, (float(r) for r in ratios), strict=True)),
    )


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)


class _Placement:
    """Where the params live during a prune: as given, on a mesh, or on the host (``offload``).

    With ``offload`` the params are host NumPy arrays and :meth:`blocks` puts one decoder block at
    a time on the devices, the next one already on its way while the current one is worked on.
    """

    def __init__(self, model: LanguageModel, layout: sharding.Layout | None, offload: bool):
        self.model = model
        self.layout = layout
        self.offload = offload

    def _put(self, tree: Any, prefix: str) -> Any:
        if self.layout is not None:
            return self.layout.put(tree, prefix)
        return jax.device_put(tree)

    def initial(self, params: Params) -> Params:
        if self.offload:
            return jax.device_get(params)
        if self.layout is not None:
            return self.layout.put(params)
        return params

    def leaf(self, path: str, value: Any) -> jax.Array:
        """A leaf of the (initial) params, on the devices."""
        return self._put(value, path) if self.offload else value

    def outer(self, params: Params) -> Params:
        """``params`` for the embedding: everything but the blocks on the devices.

        The blocks may stay host arrays: a jit-compiled function does not copy inputs it does not
        use.
        """
        if not self.offload:
            return params
        return {k: v if k == "layers" else self._put(v, f"{k}/") for k, v in params.items()}

    def blocks(self, params: Params) -> Iterator[Params]:
        """The params of blocks ``0, 1, …`` on the devices, block ``i + 1`` put before ``i``
        is returned, so that its copy (asynchronous where the platform allows) overlaps work."""
        n = self.model.num_blocks
        if not self.offload:
            yield from (self.model.block_params(params, i) for i in range(n))
            return
        upcoming = self._put(self.model.block_params(params, 0), "layers/0/")
        for i in range(n):
            current = upcoming
            if i + 1 < n:
                upcoming = self._put(self.model.block_params(params, i + 1), f"layers/{i + 1}/")
            yield current

    def to_host(self, tree: Any) -> Any:
        return jax.device_get(tree) if self.offload else tree


def prune(
    model: LanguageModel,
    params: Params,
    calibration: np.ndarray | jax.Array | None,
    recipe: Recipe,
    *,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    offload: bool = False,
) -> PruneResult:
    """Prunes ``params`` of ``model`` one-shot as ``recipe`` says.

    Args:
      model: the architecture (:class:`jaxprune.models.LanguageModel`).
      params: nested-dict params of that model; not modified.
      calibration: int calibration tokens ``(n, seqlen)`` (see :func:`jaxprune.data.load_windows`);
        needed by every method except magnitude, which accepts ``None`` (unless
        ``recipe.allocation`` is ``owl``, whose outlier pass runs on them).
      recipe: a :class:`jaxprune.recipes.Recipe` (validated here, before any work).
      progress: show progress bars.
      mesh: a ``("data", "model")`` mesh (:func:`jaxprune.sharding.make_mesh`) to prune on:
        windows split over ``data`` (their number must be a multiple of its size), kernels by
        output columns over ``model`` (the family's default rules, :mod:`jaxprune.sharding`).
        The result equals the single-device one (SparseLLM's joint MLP solve: up to float
        rounding, which can flip a near-tied mask entry). ``None``: JAX's default device.
      offload: keep the params on the host (NumPy) and move one block at a time to the devices,
        for models larger than device memory; the returned params and masks are host arrays.

    Returns:
      :class:`PruneResult` with the pruned params, keep-masks and a report (per linear: sparsity,
      relative reconstruction error on the calibration inputs, seconds; totals and timings).
    """
    recipe.validate()
    windows = calibration
    method: Method = get_method(recipe.method)
    start = time.perf_counter()
    if offload and jax.process_count() > 1:
        raise ValueError(
            "offload gathers pruned blocks into one host's memory and runs in a single process; "
            "prune without offload in a multi-process run"
        )
    layout = None
    if mesh is not None:
        layout = sharding.Layout(mesh, sharding.rules_for(model.family.name))
    placement = _Placement(model, layout, offload)
    params = placement.initial(params)
    paths = masks.select_paths(
        params, recipe.targets or (model.family.default_targets,), recipe.ignore
    )
    linears, others = _locate(model, paths)
    timings = dict.fromkeys(
        (
            "capture_seconds",
            "propagate_seconds",
            "forward_seconds",
            "stats_seconds",
            "solve_seconds",
        ),
        0.0,
    )
    per_layer: dict[str, dict[str, Any]] = {}
    joint_reports: dict[str, dict[str, Any]] = {}
    new_leaves: dict[str, jax.Array] = {}
    mask_leaves: dict[str, jax.Array] = {}
    options = {**method.options, **recipe.options}

    def solve(path: str, kernel: jax.Array, stats, target: Target) -> jax.Array:
        t0 = time.perf_counter()
        if layout is None:
            new_kernel, keep = method.prune(kernel, stats, target, **options)
        else:
            new_kernel, keep = sharding.prune_kernel(
                method, kernel, stats, target, layout, **options
            )
        jax.block_until_ready(new_kernel)
        seconds = time.perf_counter() - t0
        timings["solve_seconds"] += seconds
        new_leaves[path], mask_leaves[path] = new_kernel, keep
        per_layer[path] = {
            "target": str(target),
            "target_sparsity": float(target.sparsity),
            "seconds": seconds,
        }
        return new_kernel

    def solve_mlp(bp: Params, unit: list[_Linear], x: jax.Array, down_in: jax.Array):
        """Joint solve of one block's MLP; returns the new block params and error checks."""
        t0 = time.perf_counter()
        family = model.family
        by_key = {key: name for key, name in family.mlp_linears}
        lin_of = {lin.name: lin for lin in unit}
        kernels = {key: masks.get_leaf(bp, f"{name}/kernel") for key, name in by_key.items()}
        biases = {
            key: masks.get_leaf(bp, f"{name}/bias")
            for key, name in by_key.items()
            if "bias" in masks.get_leaf(bp, name)
        }
        out_key = family.mlp_linears[-1][0]
        y = down_in @ kernels[out_key].astype(jnp.float32)
        if out_key in biases:
            y = y + biases[out_key].astype(jnp.float32)
        solution = method.mlp_solver(
            kernels,
            x,
            y,
            {key: targets[lin_of[name].path] for key, name in by_key.items()},
            kind=family.mlp_kind,
            biases=biases or None,
            **options,
        )
        jax.block_until_ready(solution.kernels)
        seconds = time.perf_counter() - t0
        timings["solve_seconds"] += seconds
        leaves, checks = {}, {}
        for key, name in by_key.items():
            lin = lin_of[name]
            # On a mesh the joint solver's results come back placed like the dense kernels.
            new, keep = sharding.place_like(
                (solution.kernels[key].astype(kernels[key].dtype), solution.masks[key]),
                kernels[key],
            )
            leaves[lin.kernel_path] = new
            new_leaves[lin.path], mask_leaves[lin.path] = new, keep
            target = targets[lin.path]
            per_layer[lin.path] = {
                "target": str(target),
                "target_sparsity": float(target.sparsity),
                "seconds": seconds / len(by_key),
            }
            checks[lin.path] = (lin.tap, kernels[key], new)
        for key, bias in solution.biases.items():
            leaves[f"{by_key[key]}/bias"] = sharding.place_like(
                bias.astype(biases[key].dtype), biases[key]
            )
        joint_reports[f"layers/{unit[0].block}/mlp"] = {
            "objective": [float(v) for v in solution.objective],
            "output_error": [float(v) for v in solution.output_error],
            "seconds": seconds,
        }
        return masks.set_leaves(bp, leaves), checks

    def embedded_windows() -> tuple[_BlockRunner, list[jax.Array]]:
        """The calibration windows, checked, placed and embedded; the runner for the blocks."""
        nonlocal windows
        if windows is None:
            needs = f"method {method.name!r}" if method.needs_inputs else "allocation 'owl'"
            raise ValueError(f"{needs} needs calibration windows (tokens)")
        if np.ndim(windows) != 2:
            raise ValueError(
                f"calibration windows must be (n, seqlen) tokens, got {np.shape(windows)}"
            )
        if layout is None:
            windows = jnp.asarray(windows, dtype=jnp.int32)
        else:
            windows = layout.windows(windows)
        bs = _batch_size(windows.shape[0], recipe.batch_size, layout.data_size if layout else 1)
        runner = _BlockRunner(model, bs, timings, layout)
        t0 = time.perf_counter()
        outer = placement.outer(params)
        hidden = [
            _embed(model, outer, windows[lo : lo + bs], runner.batch)
            for lo in range(0, windows.shape[0], bs)
        ]
        del outer
        jax.block_until_ready(hidden)
        embed_seconds = time.perf_counter() - t0
        timings["propagate_seconds"] += embed_seconds
        timings["forward_seconds"] += embed_seconds
        return runner, hidden

    def owl_allocation(runner: _BlockRunner, hidden: list[jax.Array]) -> dict[int, float]:
        nonlocal owl_report
        if not linears:
            raise ValueError(
                "allocation 'owl' spreads sparsity over decoder blocks, but no target is a linear "
                f"of a decoder block ({others[:5]}); use allocation='uniform'"
            )
        block_sparsity, outlier_ratio = _owl_block_sparsity(
            model, params, hidden, linears, recipe, runner, placement, progress
        )
        owl_report = {"outlier_ratio": outlier_ratio, "block_sparsity": block_sparsity}
        return block_sparsity

    owl_report = None
    if not method.needs_inputs:
        block_sparsity = None
        if recipe.allocation == "owl":
            block_sparsity = owl_allocation(*embedded_windows())
        targets = _targets_by_path(recipe, paths, block_sparsity)
        for path in _progress(paths, progress, f"{method.name}"):
            solve(path, placement.leaf(path, masks.get_leaf(params, path)), None, targets[path])
            new_leaves[path], mask_leaves[path] = placement.to_host(
                (new_leaves[path], mask_leaves[path])
            )
    else:
        if others:
            raise ValueError(
                f"method {method.name!r} needs calibration inputs, but these targets are not "
                f"linears of a decoder block: {others[:5]}; narrow `targets` or use magnitude"
            )
        runner, hidden = embedded_windows()
        block_sparsity = owl_allocation(runner, hidden) if recipe.allocation == "owl" else None
        targets = _targets_by_path(recipe, paths, block_sparsity)
        blocks = placement.blocks(params)
        for i in _progress(range(model.num_blocks), progress, f"{method.name} blocks"):
            mine = [lin for lin in linears if lin.block == i]
            bp = next(blocks)
            if mine:
                bp, hidden = _prune_block(
                    model,
                    bp,
                    hidden,
                    mine,
                    method,
                    recipe,
                    runner,
                    targets,
                    solve,
                    solve_mlp,
                    per_layer,
                )
            else:
                hidden = runner.run(bp, hidden, with_output=True).hidden
            bp = placement.to_host(bp)
            for lin in mine:
                new_leaves[lin.path] = masks.get_leaf(bp, lin.kernel_path)
                mask_leaves[lin.path] = placement.to_host(mask_leaves[lin.path])
            params = model.with_block_params(params, i, bp)
    for path, entry in per_layer.items():
        keep = mask_leaves[path]
        entry["sparsity"] = float(1.0 - jnp.mean(keep.astype(jnp.float32)))
    pruned = masks.set_leaves(params, new_leaves)
    mask_tree = masks.set_leaves(jax.tree.map(lambda _: None, params), mask_leaves)
    report = {
        "method": method.name,
        "target": str(recipe.target),
        "allocation": recipe.allocation,
        "layers": per_layer,
        "overall_sparsity": masks.sparsity_report(pruned, paths)["overall"]["sparsity"],
        "calib_windows": 0 if windows is None else int(windows.shape[0]),
        "seqlen": 0 if windows is None else int(windows.shape[1]),
        **timings,
        "seconds": time.perf_counter() - start,
    }
    if owl_report is not None:
        report["owl"] = owl_report
    if joint_reports:
        report["joint_mlp"] = joint_reports
    return PruneResult(pruned, mask_tree, report)


@functools.partial(jax.jit, static_argnames=("model", "batch"))
def _embed(
    model: LanguageModel,
    params: Params,
    tokens: jax.Array,
    batch: jax.sharding.NamedSharding | None,
) -> jax.Array:
    hidden = model.embed(params, tokens)
    return hidden if batch is None else jax.lax.with_sharding_constraint(hidden, batch)


def _prune_block(
    model: LanguageModel,
    bp: Params,
    hidden: list[jax.Array],
    mine: list[_Linear],
    method: Method,
    recipe: Recipe,
    runner: _BlockRunner,
    targets: dict[str, Target],
    solve: Callable,
    solve_mlp: Callable,
    per_layer: dict[str, dict[str, Any]],
):
    """Prunes the targeted linears of one block; returns its params and the next hidden states.

    With a joint method (``method.mlp_solver``) and every MLP linear of the block targeted, the
    MLP is one unit: its input and the dense input of its output projection are collected for all
    windows and handed to the solver together.
    """
    groups = [
        (tap, [lin for lin in mine if lin.tap == tap]) for tap, _ in model.family.sequential_groups
    ]
    groups = [(tap, group) for tap, group in groups if group]
    mlp_names = {name for _, name in model.family.mlp_linears}
    joint = (
        method.mlp_solver is not None
        and bool(mlp_names)
        and mlp_names <= {lin.name for lin in mine}
    )
    mlp_unit = [lin for lin in mine if lin.name in mlp_names] if joint else []
    if joint:
        groups = [(tap, g) for tap, g in groups if tap not in (_MLP_IN, _DOWN_IN)]
    units: list[Any] = [*groups, *([("joint", mlp_unit)] if joint else [])]
    stages = [[u] for u in units] if recipe.true_sequential else [units]
    pending: dict[str, tuple[str, jax.Array, jax.Array]] = {}
    for stage in stages:
        stat_taps = {tap: method.needs_hessian for tap, _ in stage if tap != "joint"}
        collect = (_MLP_IN, _DOWN_IN) if any(tap == "joint" for tap, _ in stage) else ()
        calib = runner.run(bp, hidden, stat_taps=stat_taps, checks=pending, collect=collect)
        _record_errors(per_layer, pending, calib.rel_errors)
        pending = {}
        for tap, group in stage:
            if tap == "joint":
                bp, done = solve_mlp(bp, group, calib.collected[_MLP_IN], calib.collected[_DOWN_IN])
                pending.update(done)
                continue
            for lin in group:
                dense = masks.get_leaf(bp, lin.kernel_path)
                new = solve(lin.path, dense, calib.stats[tap], targets[lin.path])
                bp = masks.set_leaves(bp, {lin.kernel_path: new})
                pending[lin.path] = (tap, dense, new)
    final = runner.run(bp, hidden, checks=pending, with_output=True)
    _record_errors(per_layer, pending, final.rel_errors)
    return bp, final.hidden


def _record_errors(per_layer, pending, errors) -> None:
    for path in pending:
        per_layer[path]["rel_error"] = errors[path]


__all__ = ["PruneResult", "prune"]
