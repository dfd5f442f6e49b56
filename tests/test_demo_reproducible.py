"""``jaxprune demo --json`` (a small version) prints the same numbers to the last digit from two
processes running side by side (each loading the CPU) with different hash seeds (slow, real
model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--nsamples", "8", "--seqlen", "128", "--eval-nsamples", "4"]

pytestmark = [pytest.mark.slow, pytest.mark.real_model]


def _demo(hash_seed: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONHASHSEED": hash_seed,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [sys.executable, "-m", "jaxprune.cli", "demo", "--json", *SMALL]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_demo_runs_print_the_same_perplexity_to_the_last_digit():
    runs = [_demo("1"), _demo("2")]  # side by side: each loads the other's CPU
    outputs = [run.communicate(timeout=3600) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err.decode()[-2000:]
    first, second = (json.loads(out) for out, _ in outputs)
    for result in (first, second):
        result.pop("prune_seconds")
    assert first == second
    assert first["ppl_pruned"] > first["ppl_dense"]
