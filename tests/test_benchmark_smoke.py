"""The accelerator benchmark script runs end to end at its CPU smoke shape (as CI must check)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "accelerator_llama7b.py"
FIELDS = {
    "device",
    "method",
    "layers",
    "hidden",
    "intermediate",
    "calib_tokens",
    "total_seconds",
    "forward_seconds",
    "stats_seconds",
    "solve_seconds",
    "peak_memory_bytes",
}


def test_accelerator_benchmark_small_shape_writes_every_field(tmp_path):
    out = tmp_path / "results.jsonl"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "--profile", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["method"], r["sparsity"], r["pattern"]) for r in rows] == [
        ("wanda", 0.5, None),
        ("sparsegpt", 0.5, None),
        ("sparsegpt", 0.5, "2:4"),
    ]
    for row in rows:
        assert FIELDS <= set(row), FIELDS - set(row)
        assert row["device"] == "cpu"
        parts = row["forward_seconds"] + row["stats_seconds"] + row["solve_seconds"]
        assert 0 < parts <= row["total_seconds"] * 1.01


@pytest.mark.slow  # long end-to-end run; the default run covers its parts
def test_sparsellm_and_its_sparsegpt_baseline_run_at_the_smoke_shape(tmp_path):
    out = tmp_path / "results.jsonl"
    argv = ["--small", "--layers", "1", "--methods", "sparsegpt-0.7", "sparsellm-0.7"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *argv, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["method"], r["sparsity"]) for r in rows] == [("sparsegpt", 0.7), ("sparsellm", 0.7)]
    assert rows[1]["joint_seconds"] > 0 and rows[0]["joint_seconds"] == 0
    assert "forward_seconds" in rows[0] and rows[0]["forward_seconds"] is None  # no --profile


def test_factorisation_benchmark_times_both_paths_and_they_agree(tmp_path):
    out = tmp_path / "factorisation.json"
    script = SCRIPT.parent / "factorisation_cpu.py"
    argv = [sys.executable, str(script), "--out", str(out), "--widths", "5", "130"]
    done = subprocess.run(argv + ["--repeats", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["width"] for row in rows] == [5, 130]
    for row in rows:
        assert row["lapack"]["median_s"] > 0 and row["blocked"]["median_s"] > 0
        assert row["max_relative_difference"] < 1e-5
