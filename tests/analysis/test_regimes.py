"""Regime classification, the sweep over a grid of (density, temperature) and the map figure."""

from __future__ import annotations

import numpy as np
import pytest

from jaxprune.analysis import RECOMMENDATIONS, Temperature, classify, plot_regime_map, sweep
from jaxprune.models.vision import VGGConfig, VisionModel


def test_classify_by_barrier_then_similarity():
    assert classify(0.2, 0.99, barrier_tol=0.05) == "I"
    assert classify(0.01, 0.99, barrier_tol=0.05, cka_threshold=0.9) == "II-B"
    assert classify(0.01, 0.5, barrier_tol=0.05, cka_threshold=0.9) == "II-A"
    assert "raise" in RECOMMENDATIONS["I"] and "lower" in RECOMMENDATIONS["II-A"]


def test_temperature_needs_positive_values():
    with pytest.raises(ValueError, match="epochs"):
        Temperature(0, 32)


def test_sweep_fills_the_grid_and_plots(tmp_path):
    model = VisionModel(VGGConfig(widths=(4, "M", 6), image_size=8))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 40).astype(np.int32)
    calls = []

    def solve(density, temperature, seed):
        calls.append((density, temperature.epochs, seed))
        # The same network for both seeds at density 1 (connected, identical), different ones
        # otherwise (a barrier or dissimilar).
        params, stats = model.init(0 if density == 1.0 else seed)
        return model, params, stats

    temps = (Temperature(1, 32), Temperature(2, 16))
    rmap = sweep([0.5, 1.0], temps, solve, x, y, hessian_samples=2)
    assert rmap.barriers.shape == (2, 2) and rmap.regimes.shape == (2, 2)
    assert len(calls) == 8
    assert list(rmap.regimes[1]) == ["II-B", "II-B"]
    assert np.all(rmap.barriers[1] == 0.0) and np.allclose(rmap.ckas[1], 1.0)
    assert rmap.cells[0][0].hessian_trace is not None
    assert len(rmap.to_dict()["cells"]) == 4
    fig = plot_regime_map(rmap)
    fig.savefig(tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 1000
