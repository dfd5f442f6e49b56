"""Running one decoder block over every calibration window, batch by batch.

A pass of a block produces (as asked) its outputs for the next block, the statistics of some of
its taps (the inputs of its linears), the raw inputs of some taps for joint solvers, and the
relative output errors of kernels just pruned. Statistics are whatever ``(init, update)`` pair the
caller hands in (:class:`jaxprune.methods.statistics.Statistic`); the runner does not know what
they compute. A tap of stacked expert kernels gets per-expert statistics from each expert's
routed tokens (:mod:`jaxprune.engine.experts`).
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxprune.engine.experts as experts
from jaxprune.core.paths import get_leaf
from jaxprune.engine.placement import Placement
from jaxprune.engine.report import PruneLog
from jaxprune.methods.base import Method
from jaxprune.methods.statistics import Statistic, total
from jaxprune.models.base import LanguageModel, Params
from jaxprune.recipes import Recipe
from jaxprune.sharding import Layout

# checks[name] = (tap, dense kernel, pruned kernel) of a linear whose output error is measured.
Checks = dict[str, tuple[str, jax.Array, jax.Array]]


def batch_size(n: int, wanted: int, multiple: int = 1) -> int:
    """The largest divisor of ``n`` not above ``wanted`` (one compiled shape, no padding).

    With a ``data`` mesh axis of size ``multiple`` > 1 (which divides ``n``, see
    :meth:`jaxprune.sharding.Layout.windows`) the batch must split evenly over it, so it is the
    largest divisor of ``n`` that is a multiple of ``multiple`` and at most
    ``max(wanted, multiple)``.
    """
    limit = min(n, max(wanted, multiple))
    return max(d for d in range(multiple, limit + 1, multiple) if n % d == 0)


@functools.partial(jax.jit, static_argnames=("model", "taps", "with_output", "batch"))
def _forward_step(
    model: LanguageModel,
    block_params: Params,
    hidden: jax.Array,
    index: int,
    *,
    taps: tuple[str, ...],
    with_output: bool,
    batch: jax.sharding.NamedSharding | None,
):
    """One batch through block ``index``: its output (if wanted) and the inputs of ``taps``.

    ``index`` is traced, not static, so every block of the same shape shares one compiled step.
    """
    out, captured = model.block(block_params, hidden, capture=True, index=index)
    if batch is not None and with_output:
        out = jax.lax.with_sharding_constraint(out, batch)
    return (out if with_output else None), {tap: captured[tap] for tap in taps}


@functools.partial(
    jax.jit,
    static_argnames=("statistic", "stat_taps", "error_taps", "collect_taps", "replicated"),
)
def _statistics_step(
    taps: dict[str, jax.Array],
    stats: dict[str, Any],
    checks: dict[str, tuple[jax.Array, jax.Array]],
    *,
    statistic: Statistic | None,
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
    new_stats = {tap: experts.update_stats(statistic, stats[tap], taps[tap]) for tap in stat_taps}
    if replicated is not None:
        new_stats = jax.lax.with_sharding_constraint(new_stats, replicated)
    errors = {}
    for name, tap in error_taps:
        dense, pruned = checks[name]
        x = taps[tap].reshape(-1, dense.shape[0]).astype(jnp.float32)
        y = x @ dense.astype(jnp.float32)
        diff = y - x @ pruned.astype(jnp.float32)
        errors[name] = (total(diff * diff), total(y * y))
    collected = {
        tap: taps[tap].reshape(-1, taps[tap].shape[-1]).astype(jnp.float32) for tap in collect_taps
    }
    return new_stats, errors, collected


class BlockPass(NamedTuple):
    """What one pass of a block over all windows produced."""

    hidden: list[jax.Array] | None
    stats: dict[str, Any]
    rel_errors: dict[str, float]
    collected: dict[str, jax.Array]


class BlockRunner:
    """Runs passes of one block over all windows in batches, adding to the log's timings.

    The log gets the seconds of whole passes (``capture_seconds`` for passes that gather
    statistics, ``propagate_seconds`` for those producing the next block's inputs). With
    ``profile`` it also splits them, across both, into the block's forward computation
    (``forward_seconds``) and the statistics, error sums and collected inputs computed from its
    taps (``stats_seconds``); that waits for the device after every batch, so it is off by default
    and batches are otherwise queued without a host round trip.
    """

    def __init__(
        self,
        model: LanguageModel,
        size: int,
        log: PruneLog,
        layout: Layout | None = None,
        profile: bool = False,
    ):
        self.model = model
        self.batch_size = size
        self.log = log
        self.profile = profile
        self.batch = None if layout is None else layout.batch
        self.replicated = None if layout is None else layout.replicated

    def run(
        self,
        block_params: Params,
        hidden: list[jax.Array],
        *,
        index: int,
        statistic: Statistic | None = None,
        stat_taps: tuple[str, ...] = (),
        checks: Checks | None = None,
        with_output: bool = False,
        collect: tuple[str, ...] = (),
    ) -> BlockPass:
        """One pass of the block over ``hidden`` (a list of batches).

        Args:
          block_params: the block's params (as placed).
          hidden: the block's inputs, one array per batch of windows.
          index: the block's position in the stack (see :meth:`LanguageModel.block`).
          statistic: the ``(init, update)`` pair accumulated for every tap of ``stat_taps``.
          stat_taps: the taps to gather statistics of.
          checks: kernels to measure the relative output error ‖X(W−Ŵ)‖²/‖XW‖² of.
          with_output: also return the block's outputs (the next block's inputs).
          collect: taps whose raw inputs (float32, all windows) are returned.
        """
        checks = checks or {}
        timings = self.log.timings
        start = time.perf_counter()
        # Checks are keyed by position, not by path, so that every block of the same shape reuses
        # one compiled step (a path names its block index).
        ordered = sorted(checks)
        error_taps = tuple((f"c{k}", checks[name][0]) for k, name in enumerate(ordered))
        arrays = {f"c{k}": checks[name][1:] for k, name in enumerate(ordered)}
        taps = tuple(sorted({*stat_taps, *(tap for _, tap in error_taps), *collect}))
        stats = {
            tap: experts.init_stats(statistic, self._tap_kernel(block_params, tap).shape)
            for tap in stat_taps
        }
        if self.replicated is not None:
            stats = jax.device_put(stats, self.replicated)
        outputs, sums = [], {name: [0.0, 0.0] for name in checks}
        collected: dict[str, list[jax.Array]] = {tap: [] for tap in collect}
        sync = jax.block_until_ready if self.profile else (lambda tree: tree)
        for batch in hidden:
            t0 = time.perf_counter()
            out, captured = sync(
                _forward_step(
                    self.model,
                    block_params,
                    batch,
                    index,
                    taps=taps,
                    with_output=with_output,
                    batch=self.batch,
                )
            )
            t1 = time.perf_counter()
            timings["forward_seconds"] += t1 - t0
            if taps:
                stats, errs, raw = sync(
                    _statistics_step(
                        captured,
                        stats,
                        arrays,
                        statistic=statistic,
                        stat_taps=tuple(sorted(stat_taps)),
                        error_taps=error_taps,
                        collect_taps=collect,
                        replicated=self.replicated,
                    )
                )
                timings["stats_seconds"] += time.perf_counter() - t1
                for tap in collect:
                    collected[tap].append(raw[tap])
                for k, name in enumerate(ordered):
                    num, den = errs[f"c{k}"]
                    sums[name][0] += num
                    sums[name][1] += den
            if with_output:
                outputs.append(out)
        jax.block_until_ready((outputs, stats, collected))
        gathered = {tap: jnp.concatenate(parts) for tap, parts in collected.items()}
        key = "propagate_seconds" if with_output else "capture_seconds"
        timings[key] += time.perf_counter() - start
        rel_errors = {
            name: float(num) / max(float(den), 1e-30) for name, (num, den) in sums.items()
        }
        return BlockPass(outputs if with_output else None, stats, rel_errors, gathered)

    def _tap_kernel(self, block_params: Params, tap: str) -> jax.Array:
        """The kernel of the first linear reading ``tap`` (``(in, out)``, or stacked experts'
        ``(experts, in, out)``)."""
        for group_tap, names in self.model.family.sequential_groups:
            if group_tap == tap:
                return get_leaf(block_params, f"{names[0]}/kernel")
        raise KeyError(tap)


@functools.partial(jax.jit, static_argnames=("model", "batch"))
def _embed(
    model: LanguageModel,
    params: Params,
    tokens: jax.Array,
    batch: jax.sharding.NamedSharding | None,
) -> jax.Array:
    hidden = model.embed(params, tokens)
    return hidden if batch is None else jax.lax.with_sharding_constraint(hidden, batch)


def start(
    model: LanguageModel,
    params: Params,
    windows: np.ndarray | jax.Array | None,
    recipe: Recipe,
    method: Method,
    placement: Placement,
    log: PruneLog,
    profile: bool = False,
) -> tuple[BlockRunner, list[jax.Array]]:
    """The calibration windows checked, placed and embedded, and the runner for the blocks.

    Returns:
      ``(runner, hidden)``: the block runner and the first block's inputs, one array per batch.

    Raises:
      ValueError: no windows, or not ``(n, seqlen)`` tokens.
    """
    if windows is None:
        needs = f"method {method.name!r}" if method.needs_inputs else "allocation 'owl'"
        raise ValueError(f"{needs} needs calibration windows (tokens)")
    if np.ndim(windows) != 2:
        raise ValueError(f"calibration windows must be (n, seqlen) tokens, got {np.shape(windows)}")
    layout = placement.layout
    windows = jnp.asarray(windows, dtype=jnp.int32) if layout is None else layout.windows(windows)
    size = batch_size(windows.shape[0], recipe.batch_size, layout.data_size if layout else 1)
    runner = BlockRunner(model, size, log, layout, profile)
    t0 = time.perf_counter()
    outer = placement.outer(params)
    hidden = [
        _embed(model, outer, windows[lo : lo + size], runner.batch)
        for lo in range(0, windows.shape[0], size)
    ]
    del outer
    jax.block_until_ready(hidden)
    seconds = time.perf_counter() - t0
    log.timings["propagate_seconds"] += seconds
    log.timings["forward_seconds"] += seconds
    return runner, hidden
