"""The polarization and regime benchmarks run end to end at a tiny shape (MNIST from the cache
or a download; slow: about a minute each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
ENV = {**os.environ, "PYTHONPATH": str(BENCH.parent)}


def run(script: str, *argv: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *argv],
        capture_output=True, text=True, timeout=900, cwd=BENCH, env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_polarization_benchmark_writes_three_methods_and_a_histogram(tmp_path):
    out, plot = tmp_path / "p.json", tmp_path / "p.png"
    run("polarization.py", "--datasets", "mnist", "--archs", "cnn", "--train-size", "512",
        "--epochs", "2", "--out", str(out), "--plot", str(plot))  # fmt: skip
    runs = json.loads(out.read_text())["runs"]
    assert [r["method"] for r in runs] == [
        "dense", "polarization", "l1-ft", "bn-polar", "bn-polar-ref"
    ]  # fmt: skip
    bn = runs[3]
    assert {"masked_accuracy", "unfolded_accuracy", "regularized_accuracy"} <= set(bn)
    assert plot.stat().st_size > 1000


@pytest.mark.slow
def test_regime_benchmark_writes_every_cell_and_a_map(tmp_path):
    out, plot = tmp_path / "r.json", tmp_path / "r.png"
    run("regimes.py", "--train-size", "256", "--eval-size", "128", "--bn-size", "128",
        "--densities", "0.5", "--temperatures", "1x128", "1x64", "--hessian-samples", "2",
        "--out", str(out), "--plot", str(plot))  # fmt: skip
    cells = json.loads(out.read_text())["cells"]
    assert len(cells) == 2 and all(c["regime"] in ("I", "II-A", "II-B", "collapsed") for c in cells)
    assert all(len(c["pair_barriers"]) == 3 for c in cells)  # seeds 1, 2, 3: three pairs
    assert plot.stat().st_size > 1000
