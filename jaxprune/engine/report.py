"""The prune report: per-linear records, timings, and what allocations and joint solvers said."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune.core.masks import sparsity_report
from jaxprune.core.paths import set_leaves
from jaxprune.core.sparsity import Target
from jaxprune.methods.base import Method
from jaxprune.models.base import Params
from jaxprune.recipes import Recipe

TIMINGS = (
    "capture_seconds",
    "propagate_seconds",
    "forward_seconds",
    "stats_seconds",
    "solve_seconds",
)


@dataclasses.dataclass(frozen=True)
class PruneResult:
    """Pruned params, keep-masks (params structure, ``None`` where unpruned) and a JSON report."""

    params: Params
    masks: Params
    report: dict[str, Any]


@dataclasses.dataclass
class Solved:
    """One pruned kernel: the new kernel, its keep-mask and its report entry."""

    kernel: jax.Array
    keep: jax.Array
    record: dict[str, Any]


def record(target: Target, seconds: float) -> dict[str, Any]:
    """The report entry of a linear just solved (errors and sparsity are added later)."""
    return {"target": str(target), "target_sparsity": float(target.sparsity), "seconds": seconds}


class PruneLog:
    """Collects what a prune did, block by block, and assembles the result.

    Attributes:
      timings: seconds by phase (see :data:`TIMINGS`), added to by the block runner and solvers;
        ``forward_seconds`` and ``stats_seconds`` are reported only when ``profile`` is on.
      allocation: what a data-driven allocation reported (OWL's ratios and sparsities), or None.
    """

    def __init__(self, method: Method, recipe: Recipe, profile: bool = False):
        self.method = method
        self.recipe = recipe
        self.profile = profile
        self.timings = dict.fromkeys(TIMINGS, 0.0)
        self.allocation: dict[str, Any] | None = None
        self._start = time.perf_counter()
        self._solved: dict[str, Solved] = {}
        self._zeros: dict[str, tuple[int, int]] = {}
        self._joint: dict[str, dict[str, Any]] = {}

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Adds the seconds spent in the ``with`` body to ``timings[phase]``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] += time.perf_counter() - t0

    def add(self, solved: dict[str, Solved], joint: dict[str, dict[str, Any]] | None = None):
        """Records pruned kernels by path (and joint solver reports by unit).

        Their sparsity is counted here, while they are still device arrays: an offloaded
        multi-process run then keeps only shards of them on each host.
        """
        for path, entry in solved.items():
            entry.record["sparsity"] = float(1.0 - jnp.mean(entry.keep.astype(jnp.float32)))
            self._zeros[path] = (int(jnp.sum(entry.kernel == 0)), int(entry.kernel.size))
        self._solved.update(solved)
        self._joint.update(joint or {})

    def finish(self, params: Params, paths: tuple[str, ...], windows: Any | None) -> PruneResult:
        """The pruned params (every solved kernel set in), the masks and the report."""
        pruned = set_leaves(params, {p: s.kernel for p, s in self._solved.items()})
        masks = set_leaves(
            jax.tree.map(lambda _: None, params), {p: s.keep for p, s in self._solved.items()}
        )
        report = {
            "method": self.method.name,
            "target": str(self.recipe.target),
            "allocation": self.recipe.allocation,
            "layers": {path: s.record for path, s in self._solved.items()},
            "overall_sparsity": self._overall_sparsity(pruned, paths),
            "calib_windows": 0 if windows is None else int(windows.shape[0]),
            "seqlen": 0 if windows is None else int(windows.shape[1]),
            **{
                k: v
                for k, v in self.timings.items()
                if self.profile or k not in ("forward_seconds", "stats_seconds")
            },
            "seconds": time.perf_counter() - self._start,
        }
        if self.allocation is not None:
            report["owl"] = self.allocation
        if self._joint:
            report["joint_mlp"] = self._joint
        return PruneResult(pruned, masks, report)

    def _overall_sparsity(self, pruned: Params, paths: tuple[str, ...]) -> float:
        if not set(paths) <= set(self._zeros):
            return sparsity_report(pruned, paths)["overall"]["sparsity"]
        zeros = sum(self._zeros[p][0] for p in paths)
        return zeros / max(sum(self._zeros[p][1] for p in paths), 1)


def progress_bar(iterable: Iterable, enabled: bool, desc: str) -> Iterable:
    """``iterable`` with a tqdm bar when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)
