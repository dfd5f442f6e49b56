"""The three-regime model of pruning (Zhou, Yang, Chang, Mahoney, ICML 2023): sweeps and maps.

Whether a pruned network recovers depends on a **load** (the density of the pruned model) and a
**temperature** of the dense model's training. One direction everywhere, the paper's: **more
epochs and smaller batches are hotter** (its Figure 2 raises the temperature by training the dense
model longer; Yang et al. 2021 by shrinking the batch). Solutions of one cell (same load and
temperature, retrained under different seeds) tell the regime apart:

- **I**: a loss barrier between them (poorly connected landscape);
- **II-A**: linearly connected, representations dissimilar (low CKA);
- **II-B**: linearly connected, representations similar (high CKA).

The paper's recommendation at a fixed load: from I, *raise* the temperature (towards II-A); from
II-A, *lower* it (towards II-B); II-B is the favourable regime (:data:`RECOMMENDATIONS`).

A fourth outcome is not a regime: **collapsed**, a cell whose worse solution did not learn, so
its barrier and CKA say nothing (two networks that both predict one class are "connected" and
"similar"). The rule (:func:`collapsed`): the worse solution's accuracy is at most
``1/C + margin·(1 − 1/C)``, ``C`` classes, ``margin`` 0.1 by default (for ``C = 10``: accuracy
≤ 0.19). Accuracy, not loss: a network retrained at a high learning rate can be confidently
wrong on some inputs, with a loss above ``ln C`` and half of its answers right.
It is decided before the regimes.

The paper measures connectivity along a fitted Bézier curve (its ``mc`` metric, whose sign
separates the regimes); here it is the linear path's barrier (:mod:`~jaxprune.analysis.lmc`,
BatchNorm recomputed at every point) against a tolerance, and similarity is the linear CKA
(:mod:`~jaxprune.analysis.cka`) of the two solutions' logits against a threshold. Both
thresholds are arguments; the raw values are kept with every cell so a map can be re-read.

:func:`sweep` is measurement only: how a cell's solutions are made is the caller's ``solve``
(train, prune, retrain), so any training recipe fits::

    rmap = sweep([0.1, 0.2, 0.5, 1.0], [Temperature(2, 256), Temperature(4, 64)], solve,
                 test.images, test.labels, bn_images=train.images[:2000])
    rmap.regimes, rmap.barriers, rmap.ckas            # (densities, temperatures) arrays
    fig = plot_regime_map(rmap); fig.savefig("regimes.png")
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxprune.analysis.cka import model_cka
from jaxprune.analysis.hessian import loss_hessian_trace
from jaxprune.analysis.lmc import barrier, recompute_batch_stats

__all__ = [
    "COLLAPSED",
    "RECOMMENDATIONS",
    "REGIMES",
    "RegimeCell",
    "RegimeMap",
    "Temperature",
    "classify",
    "collapsed",
    "plot_regime_map",
    "sweep",
]

REGIMES = ("I", "II-A", "II-B")
COLLAPSED = "collapsed"
RECOMMENDATIONS = {
    "I": "poorly connected: raise the temperature (more epochs or smaller batches)",
    "II-A": "connected, dissimilar: lower the temperature (fewer epochs or larger batches)",
    "II-B": "connected, similar: the favourable regime; keep the temperature",
    COLLAPSED: "not trained (accuracy near chance): no regime; lower the load or fix the "
    "retraining before reading barrier or CKA",
}


@dataclasses.dataclass(frozen=True)
class Temperature:
    """Training noise of one column: ``epochs`` and ``batch_size`` of the dense training."""

    epochs: int
    batch_size: int

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"need epochs and batch_size >= 1, got {self.epochs}, {self.batch_size}"
            )

    @property
    def label(self) -> str:
        return f"{self.epochs} ep, batch {self.batch_size}"


def collapsed(accuracy: float, num_classes: int, margin: float = 0.1) -> bool:
    """Whether a solution is at chance: ``accuracy ≤ 1/C + margin·(1 − 1/C)``, ``C =
    num_classes`` (see the module docstring).

    Raises:
      ValueError: fewer than 2 classes or ``margin`` outside ``[0, 1)``.
    """
    if num_classes < 2 or not 0.0 <= margin < 1.0:
        raise ValueError(f"need num_classes >= 2 and margin in [0, 1), got {num_classes}, {margin}")
    chance = 1.0 / num_classes
    return accuracy <= chance + margin * (1.0 - chance)


def classify(
    barrier_value: float,
    cka: float,
    barrier_tol: float = 0.05,
    cka_threshold: float = 0.95,
    *,
    is_collapsed: bool = False,
) -> str:
    """:data:`COLLAPSED` if ``is_collapsed`` (see :func:`collapsed`); else ``"I"`` if the
    barrier exceeds ``barrier_tol``; else ``"II-B"`` if ``cka`` reaches ``cka_threshold``,
    ``"II-A"`` below it."""
    if is_collapsed:
        return COLLAPSED
    if barrier_value > barrier_tol:
        return "I"
    return "II-B" if cka >= cka_threshold else "II-A"


@dataclasses.dataclass(frozen=True)
class RegimeCell:
    """One (load, temperature) cell: the measurements and the regime they give.

    ``barrier``, ``error_barrier`` and ``cka`` are means over the pairs of solutions (each pair's
    in ``pair_barriers``, ``pair_ckas``); ``accuracy`` the mean over the solutions (each one's in
    ``solution_accuracies``, its loss in ``solution_losses``); ``losses`` the first pair's path.
    """

    density: float
    temperature: Temperature
    barrier: float
    error_barrier: float
    cka: float
    accuracy: float
    regime: str
    hessian_trace: float | None = None
    losses: tuple[float, ...] = ()
    pair_barriers: tuple[float, ...] = ()
    pair_ckas: tuple[float, ...] = ()
    solution_accuracies: tuple[float, ...] = ()
    solution_losses: tuple[float, ...] = ()

    @property
    def recommendation(self) -> str:
        return RECOMMENDATIONS[self.regime]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["temperature"] = dataclasses.asdict(self.temperature)
        for key in ("losses", "pair_barriers", "pair_ckas", "solution_accuracies"):
            d[key] = list(d[key])
        d["solution_losses"] = list(self.solution_losses)
        return d


@dataclasses.dataclass(frozen=True)
class RegimeMap:
    """Cells on a grid: rows are ``densities``, columns ``temperatures``."""

    densities: tuple[float, ...]
    temperatures: tuple[Temperature, ...]
    cells: tuple[tuple[RegimeCell, ...], ...]

    def _grid(self, field: str) -> np.ndarray:
        return np.asarray([[getattr(c, field) for c in row] for row in self.cells])

    @property
    def barriers(self) -> np.ndarray:
        return self._grid("barrier")

    @property
    def ckas(self) -> np.ndarray:
        return self._grid("cka")

    @property
    def accuracies(self) -> np.ndarray:
        return self._grid("accuracy")

    @property
    def regimes(self) -> np.ndarray:
        return self._grid("regime")

    def to_dict(self) -> dict[str, Any]:
        return {"cells": [c.to_dict() for row in self.cells for c in row]}


Solver = Callable[[float, Temperature, int], tuple[Any, Any, Any]]


def _num_classes(model: Any, labels: np.ndarray) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "num_classes", None) or int(np.max(labels)) + 1)


def _measure_cell(density: float, temp: Temperature, solutions: list, data: dict) -> RegimeCell:
    """Barriers and CKAs of every pair of ``solutions`` (``(model, params, stats)``), the
    endpoints' accuracies and losses, the regime."""
    model = solutions[0][0]
    if any(m != model for m, _, _ in solutions):
        raise ValueError(f"the solutions of cell ({density}, {temp}) differ in model")
    images, labels, bn_images = data["images"], data["labels"], data["bn_images"]
    results, ckas, ends = [], [], {}
    for i, j in itertools.combinations(range(len(solutions)), 2):
        a, b = solutions[i][1:], solutions[j][1:]
        lmc = barrier(model, a, b, images, labels, bn_images=bn_images, points=data["points"])
        results.append(lmc)
        try:
            ckas.append(model_cka(model, a, b, images, data["cka_tap"]))
        except ValueError:  # a constant representation: only a collapsed cell may have one
            ckas.append(float("nan"))
        ends.setdefault(i, (float(lmc.losses[0]), 1.0 - float(lmc.errors[0])))
        ends.setdefault(j, (float(lmc.losses[-1]), 1.0 - float(lmc.errors[-1])))
    losses = [ends[k][0] for k in range(len(solutions))]
    accuracies = [ends[k][1] for k in range(len(solutions))]
    trace = None
    if data["hessian_samples"] > 0:
        _, pa, sa = solutions[0]
        stats = recompute_batch_stats(model, pa, sa, bn_images)
        trace = loss_hessian_trace(
            model, pa, stats, images[:256], labels[:256], data["hessian_samples"]
        ).trace
    down = collapsed(min(accuracies), _num_classes(model, labels), data["collapse_margin"])
    if not down and np.isnan(ckas).any():
        raise ValueError(f"cell ({density}, {temp}): a solution's representation is constant")
    mean_barrier = float(np.mean([r.barrier for r in results]))
    cka = float(np.mean(ckas))
    return RegimeCell(
        float(density),
        temp,
        mean_barrier,
        float(np.mean([r.error_barrier for r in results])),
        cka,
        float(np.mean(accuracies)),
        classify(mean_barrier, cka, data["barrier_tol"], data["cka_threshold"], is_collapsed=down),
        trace,
        tuple(float(x) for x in results[0].losses),
        tuple(r.barrier for r in results),
        tuple(float(c) for c in ckas),
        tuple(accuracies),
        tuple(losses),
    )


def sweep(
    densities: Sequence[float],
    temperatures: Sequence[Temperature],
    solve: Solver,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    bn_images: np.ndarray | None = None,
    seeds: Sequence[int] = (0, 1),
    points: int = 11,
    cka_tap: str | None = None,
    hessian_samples: int = 0,
    barrier_tol: float = 0.05,
    cka_threshold: float = 0.95,
    collapse_margin: float = 0.1,
    log: Callable[[str], None] | None = None,
) -> RegimeMap:
    """Measures every (density, temperature) cell from its solutions, one per seed.

    Args:
      densities, temperatures: the grid's rows and columns.
      solve: ``solve(density, temperature, seed) -> (model, params, stats)``, a trained (pruned)
        solution; every seed of a cell must give the same architecture. The paper's protocol:
        one dense model per temperature, pruned, then retrained under each seed.
      images, labels: where losses, errors and CKA are measured.
      bn_images: BatchNorm's images at every interpolation point (default ``images``).
      seeds: the solutions' seeds (at least 2); every pair is measured (the paper: 3 seeds, 3
        pairs), and the cell keeps the means.
      points: interpolation points (≥ 11).
      cka_tap: the representation compared (default the logits; see
        :func:`~jaxprune.analysis.cka.representations`).
      hessian_samples: if positive, the Hutchinson trace of the first solution's loss Hessian on
        the first 256 examples.
      barrier_tol, cka_threshold: the regime boundaries (:func:`classify`).
      collapse_margin: the margin of :func:`collapsed`, applied to the worse solution.
      log: called with one line per finished cell.

    Raises:
      ValueError: fewer than two seeds.
    """
    if len(set(seeds)) < 2:
        raise ValueError(f"need at least two different seeds, got {tuple(seeds)}")
    data = {
        "images": images,
        "labels": labels,
        "bn_images": bn_images if bn_images is not None else images,
        "points": points,
        "cka_tap": cka_tap,
        "hessian_samples": hessian_samples,
        "barrier_tol": barrier_tol,
        "cka_threshold": cka_threshold,
        "collapse_margin": collapse_margin,
    }
    rows = []
    for density in densities:
        row = []
        for temp in temperatures:
            solutions = [solve(density, temp, seed) for seed in seeds]
            cell = _measure_cell(density, temp, solutions, data)
            if log is not None:
                log(
                    f"density {density:g}, {temp.label}: barrier {cell.barrier:.4f}, "
                    f"CKA {cell.cka:.4f}, accuracy {cell.accuracy:.4f} -> {cell.regime}"
                )
            row.append(cell)
        rows.append(tuple(row))
    return RegimeMap(tuple(float(d) for d in densities), tuple(temperatures), tuple(rows))


_OUTCOMES = (*REGIMES, COLLAPSED)
_COLOURS = {"I": "#d9534f", "II-A": "#f0ad4e", "II-B": "#5cb85c", COLLAPSED: "#9e9e9e"}


def plot_regime_map(rmap: RegimeMap, title: str | None = None):
    """A ``matplotlib.figure.Figure``: one coloured cell per (density, temperature) with its
    regime (grey: collapsed), barrier, CKA and accuracy, and the recommendations below."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    codes = np.vectorize(_OUTCOMES.index)(rmap.regimes)
    fig = Figure(figsize=(2.2 + 2.0 * len(rmap.temperatures), 2.4 + 1.0 * len(rmap.densities)))
    ax = fig.add_axes((0.18, 0.32, 0.78, 0.58))
    cmap = ListedColormap([_COLOURS[r] for r in _OUTCOMES])
    ax.imshow(codes, cmap=cmap, vmin=-0.5, vmax=len(_OUTCOMES) - 0.5, aspect="auto", origin="lower")
    for i, row in enumerate(rmap.cells):
        for j, cell in enumerate(row):
            text = (
                f"{cell.regime}\nB={cell.barrier:.3f}\nCKA={cell.cka:.3f}\nacc={cell.accuracy:.3f}"
            )
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(rmap.temperatures)), [t.label for t in rmap.temperatures], fontsize=8)
    ax.set_yticks(range(len(rmap.densities)), [f"{d:g}" for d in rmap.densities])
    ax.set_xlabel("temperature of the dense training (more epochs, smaller batch: hotter)")
    ax.set_ylabel("load (density)")
    ax.set_title(title or "three-regime map (B: loss barrier, CKA: logits)", fontsize=9)
    legend = "\n".join(f"{r}: {RECOMMENDATIONS[r]}" for r in _OUTCOMES)
    fig.text(0.02, 0.02, legend, fontsize=7, va="bottom")
    return fig
