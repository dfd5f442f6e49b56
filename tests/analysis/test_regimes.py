"""Regime classification, the sweep over a grid of (density, temperature) and the map figure."""

from __future__ import annotations

import numpy as np
import pytest

from jaxprune.analysis import (
    COLLAPSED,
    RECOMMENDATIONS,
    Temperature,
    classify,
    collapsed,
    plot_regime_map,
    sweep,
)
from jaxprune.analysis import regimes as regimes_module
from jaxprune.models.vision import VGGConfig, VisionModel


def test_classify_by_barrier_then_similarity():
    assert classify(0.2, 0.99, barrier_tol=0.05) == "I"
    assert classify(0.01, 0.99, barrier_tol=0.05, cka_threshold=0.9) == "II-B"
    assert classify(0.01, 0.5, barrier_tol=0.05, cka_threshold=0.9) == "II-A"
    assert "raise" in RECOMMENDATIONS["I"] and "lower" in RECOMMENDATIONS["II-A"]
    assert classify(0.2, 0.99, is_collapsed=True) == COLLAPSED


def test_collapse_rule_is_chance_plus_a_margin_of_the_way_to_perfect():
    # C = 10, margin 0.1: accuracy <= 0.1 + 0.1 * 0.9 = 0.19.
    assert collapsed(0.123, 10) and collapsed(0.19, 10)
    assert not collapsed(0.20, 10)
    assert collapsed(0.3, 10, margin=0.3) and not collapsed(0.3, 10, margin=0.2)
    assert collapsed(0.52, 2) and not collapsed(0.56, 2)
    with pytest.raises(ValueError, match="margin"):
        collapsed(0.5, 10, margin=1.0)


def test_temperature_direction_is_one_definition():
    # The paper's: more epochs and smaller batches are hotter, in the docstring and the advice.
    doc = " ".join(regimes_module.__doc__.replace("*", "").split())
    assert "more epochs and smaller batches are hotter" in doc
    assert "fewer epochs and smaller batches are hotter" not in doc
    assert "more epochs or smaller batches" in RECOMMENDATIONS["I"]
    assert "fewer epochs or larger batches" in RECOMMENDATIONS["II-A"]


def test_a_chance_level_network_is_collapsed_not_favourable():
    # Two identical networks whose head outputs a constant: barrier 0, CKA of constant logits
    # undefined-or-1, accuracy = the majority class's share. Before the rule this was "II-B".
    model = VisionModel(VGGConfig(widths=(4, "M", 6), image_size=8))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 40).astype(np.int32)

    def solve(density, temperature, seed):
        params, stats = model.init(0)
        params["head"]["kernel"] = np.zeros_like(params["head"]["kernel"])
        return model, params, stats

    rmap = sweep([0.5], (Temperature(1, 32),), solve, x, y, seeds=(0, 1, 2))
    cell = rmap.cells[0][0]
    assert cell.barrier == 0.0 and len(cell.pair_barriers) == 3
    assert cell.solution_losses[0] == pytest.approx(np.log(10), rel=1e-5)
    assert cell.regime == COLLAPSED and "not trained" in cell.recommendation


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
    assert rmap.cells[1][0].pair_barriers == (0.0,) and len(rmap.cells[1][0].pair_ckas) == 1
    # Random networks are near chance: the density-1 cells (identical solutions) are collapsed.
    assert list(rmap.regimes[1]) == [COLLAPSED, COLLAPSED]
    assert classify(rmap.barriers[1][0], rmap.ckas[1][0]) == "II-B"
    assert np.all(rmap.barriers[1] == 0.0) and np.allclose(rmap.ckas[1], 1.0)
    assert rmap.cells[0][0].hessian_trace is not None
    assert len(rmap.to_dict()["cells"]) == 4
    fig = plot_regime_map(rmap)
    fig.savefig(tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 1000


def test_sweep_needs_two_seeds():
    with pytest.raises(ValueError, match="two different seeds"):
        sweep([0.5], (Temperature(1, 32),), None, np.zeros((2, 8, 8, 1)), np.zeros(2), seeds=(0, 0))
