"""``jaxprune demo --json`` (a small version) prints the same numbers to the last digit from two
processes running side by side (each loading the CPU) with different hash seeds, and, with
``JAXPRUNE_FIXED_ORDER_SUMS=1``, with other OpenBLAS kernels and thread counts (slow, real
model)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from jaxprune.methods.statistics import FIXED_ORDER
from jaxprune.pipeline.versions import lapack_kernels

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--nsamples", "8", "--seqlen", "128", "--eval-nsamples", "4"]

pytestmark = [pytest.mark.slow, pytest.mark.real_model]


def _demo(hash_seed: str, **extra: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONHASHSEED": hash_seed,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }
    argv = [sys.executable, "-m", "jaxprune.cli", "demo", "--json", *SMALL]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _same(*runs: subprocess.Popen) -> dict:
    outputs = [run.communicate(timeout=3600) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err.decode()[-2000:]
    first, second = (json.loads(out) for out, _ in outputs)
    for result in (first, second):
        result.pop("prune_seconds")
        result["versions"].pop("lapack")  # the kernels that ran: what may differ
    assert first == second
    assert first["ppl_pruned"] > first["ppl_dense"]
    return first


def test_two_demo_runs_print_the_same_perplexity_to_the_last_digit():
    _same(_demo("1"), _demo("2"))  # side by side: each loads the other's CPU


@pytest.mark.skipif(
    lapack_kernels() is None or platform.machine() not in {"x86_64", "AMD64"},
    reason="needs scipy's bundled OpenBLAS on x86-64",
)
def test_with_fixed_order_the_demo_ignores_openblas_kernels_and_thread_counts():
    # Sandybridge and Haswell kernels run on every x86-64 CPU; one thread (OpenBLAS and XLA)
    # against two. Without the switch these settings print other perplexities (README).
    fixed = {FIXED_ORDER: "1"}
    _same(
        _demo("1", OPENBLAS_CORETYPE="Sandybridge", OPENBLAS_NUM_THREADS="1", NPROC="1", **fixed),
        _demo("2", OPENBLAS_CORETYPE="Haswell", OPENBLAS_NUM_THREADS="2", NPROC="2", **fixed),
    )
