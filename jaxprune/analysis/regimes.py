"""The three-regime model of pruning (Zhou, Yang, Chang, Mahoney, ICML 2023): sweeps and maps.

Whether a pruned network recovers depends on a **load** (the density of the pruned model) and a
**temperature** (the noise of training: fewer epochs and smaller batches are hotter). Two
solutions of one cell (same load and temperature, different seeds) tell the regime apart:

- **I**: a loss barrier between them (poorly connected landscape);
- **II-A**: linearly connected, representations dissimilar (low CKA);
- **II-B**: linearly connected, representations similar (high CKA).

The paper's recommendation at a fixed load: from I, *raise* the temperature (towards II-A); from
II-A, *lower* it (towards II-B); II-B is the favourable regime (:data:`RECOMMENDATIONS`).

The paper measures connectivity along a fitted Bézier curve (its ``mc`` metric, whose sign
separates the regimes); here it is the linear path's barrier (:mod:`~jaxprune.analysis.lmc`,
BatchNorm recomputed at every point) against a tolerance, and similarity is the linear CKA
(:mod:`~jaxprune.analysis.cka`) of the two solutions' logits against a threshold. Both
thresholds are arguments; the raw values are kept with every cell so a map can be re-read.

:func:`sweep` is measurement only: how a cell's solutions are made is the caller's ``solve``
(train, prune, retrain), so any training recipe fits::

    rmap = sweep([0.1, 0.2, 0.5, 1.0], [Temperature(4, 64), Temperature(2, 256)], solve,
                 test.images, test.labels, bn_images=train.images[:2000])
    rmap.regimes, rmap.barriers, rmap.ckas            # (densities, temperatures) arrays
    fig = plot_regime_map(rmap); fig.savefig("regimes.png")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxprune.analysis.cka import model_cka
from jaxprune.analysis.hessian import loss_hessian_trace
from jaxprune.analysis.lmc import barrier, recompute_batch_stats

__all__ = [
    "RECOMMENDATIONS",
    "REGIMES",
    "RegimeCell",
    "RegimeMap",
    "Temperature",
    "classify",
    "plot_regime_map",
    "sweep",
]

REGIMES = ("I", "II-A", "II-B")
RECOMMENDATIONS = {
    "I": "poorly connected: raise the temperature (more epochs or smaller batches)",
    "II-A": "connected, dissimilar: lower the temperature (fewer epochs or larger batches)",
    "II-B": "connected, similar: the favourable regime; keep the temperature",
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


def classify(
    barrier_value: float, cka: float, barrier_tol: float = 0.05, cka_threshold: float = 0.95
) -> str:
    """``"I"`` if the barrier exceeds ``barrier_tol``; else ``"II-B"`` if ``cka`` reaches
    ``cka_threshold``, ``"II-A"`` below it."""
    if barrier_value > barrier_tol:
        return "I"
    return "II-B" if cka >= cka_threshold else "II-A"


@dataclasses.dataclass(frozen=True)
class RegimeCell:
    """One (load, temperature) cell: the measurements and the regime they give."""

    density: float
    temperature: Temperature
    barrier: float
    error_barrier: float
    cka: float
    accuracy: float
    regime: str
    hessian_trace: float | None = None
    losses: tuple[float, ...] = ()

    @property
    def recommendation(self) -> str:
        return RECOMMENDATIONS[self.regime]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["temperature"] = dataclasses.asdict(self.temperature)
        d["losses"] = list(self.losses)
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


def sweep(
    densities: Sequence[float],
    temperatures: Sequence[Temperature],
    solve: Solver,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    bn_images: np.ndarray | None = None,
    seeds: tuple[int, int] = (0, 1),
    points: int = 11,
    cka_tap: str | None = None,
    hessian_samples: int = 0,
    barrier_tol: float = 0.05,
    cka_threshold: float = 0.95,
    log: Callable[[str], None] | None = None,
) -> RegimeMap:
    """Measures every (density, temperature) cell from two solutions of it.

    Args:
      densities, temperatures: the grid's rows and columns.
      solve: ``solve(density, temperature, seed) -> (model, params, stats)``, a trained (pruned)
        solution; both seeds of a cell must give the same architecture.
      images, labels: where losses, errors and CKA are measured.
      bn_images: BatchNorm's images at every interpolation point (default ``images``).
      seeds: the two solutions' seeds.
      points: interpolation points (≥ 11).
      cka_tap: the representation compared (default the logits; see
        :func:`~jaxprune.analysis.cka.representations`).
      hessian_samples: if positive, the Hutchinson trace of the first solution's loss Hessian on
        the first 256 examples.
      barrier_tol, cka_threshold: the regime boundaries (:func:`classify`).
      log: called with one line per finished cell.
    """
    rows = []
    for density in densities:
        row = []
        for temp in temperatures:
            model, pa, sa = solve(density, temp, seeds[0])
            model_b, pb, sb = solve(density, temp, seeds[1])
            if model_b != model:
                raise ValueError(f"the two solutions of cell ({density}, {temp}) differ in model")
            lmc = barrier(
                model, (pa, sa), (pb, sb), images, labels, bn_images=bn_images, points=points
            )
            cka = model_cka(model, (pa, sa), (pb, sb), images, cka_tap)
            trace = None
            if hessian_samples > 0:
                stats = recompute_batch_stats(
                    model, pa, sa, bn_images if bn_images is not None else images
                )
                trace = loss_hessian_trace(
                    model, pa, stats, images[:256], labels[:256], hessian_samples
                ).trace
            accuracy = 1.0 - 0.5 * (lmc.errors[0] + lmc.errors[-1])
            regime = classify(lmc.barrier, cka, barrier_tol, cka_threshold)
            cell = RegimeCell(
                float(density),
                temp,
                lmc.barrier,
                lmc.error_barrier,
                cka,
                accuracy,
                regime,
                trace,
                tuple(float(x) for x in lmc.losses),
            )
            if log is not None:
                log(
                    f"density {density:g}, {temp.label}: barrier {cell.barrier:.4f}, "
                    f"CKA {cka:.4f}, accuracy {accuracy:.4f} -> {regime}"
                )
            row.append(cell)
        rows.append(tuple(row))
    return RegimeMap(tuple(float(d) for d in densities), tuple(temperatures), tuple(rows))


_COLOURS = {"I": "#d9534f", "II-A": "#f0ad4e", "II-B": "#5cb85c"}


def plot_regime_map(rmap: RegimeMap, title: str | None = None):
    """A ``matplotlib.figure.Figure``: one coloured cell per (density, temperature) with its
    regime, barrier and CKA, and the paper's recommendation per regime below."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    codes = np.vectorize(REGIMES.index)(rmap.regimes)
    fig = Figure(figsize=(2.2 + 2.0 * len(rmap.temperatures), 2.0 + 1.0 * len(rmap.densities)))
    ax = fig.add_axes((0.18, 0.28, 0.78, 0.62))
    cmap = ListedColormap([_COLOURS[r] for r in REGIMES])
    ax.imshow(codes, cmap=cmap, vmin=-0.5, vmax=2.5, aspect="auto", origin="lower")
    for i, row in enumerate(rmap.cells):
        for j, cell in enumerate(row):
            text = (
                f"{cell.regime}\nB={cell.barrier:.3f}\nCKA={cell.cka:.3f}\nacc={cell.accuracy:.3f}"
            )
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(rmap.temperatures)), [t.label for t in rmap.temperatures], fontsize=8)
    ax.set_yticks(range(len(rmap.densities)), [f"{d:g}" for d in rmap.densities])
    ax.set_xlabel("temperature (dense training: epochs, batch size)")
    ax.set_ylabel("load (density)")
    ax.set_title(title or "three-regime map (B: loss barrier, CKA: logits)", fontsize=9)
    legend = "\n".join(f"{r}: {RECOMMENDATIONS[r]}" for r in REGIMES)
    fig.text(0.02, 0.02, legend, fontsize=7, va="bottom")
    return fig
