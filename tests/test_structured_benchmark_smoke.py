"""The 7B-shaped structured importance benchmark runs end to end at its CPU smoke shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "structured_importance_7b.py"
FIELDS = {
    "device",
    "kind",
    "windows",
    "seqlen",
    "gradient_seconds",
    "score_seconds",
    "total_seconds",
    "params_before",
    "params_after",
    "peak_memory_bytes",
}


@pytest.mark.slow  # long end-to-end run; the default run covers its parts
def test_structured_importance_benchmark_small_shape_writes_every_field(tmp_path):
    out = tmp_path / "results.jsonl"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["vector", "element2"]
    for row in rows:
        assert FIELDS <= set(row), FIELDS - set(row)
        assert row["device"] == "cpu" and (row["windows"], row["seqlen"]) == (10, 64)
        assert 0 < row["score_seconds"] <= row["total_seconds"]
        assert row["params_after"] < row["params_before"]
