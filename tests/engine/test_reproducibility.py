"""A prune is reproducible bit for bit: the same masks, weights, errors and perplexity from two
processes that differ in everything but their inputs — hash seed, XLA's CPU thread-pool size
(``NPROC``, what a machine with other cores or another CPU affinity gets) and concurrent load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HELPER = Path(__file__).resolve().parents[1] / "helpers" / "reproducible_prune.py"
ROOT = Path(__file__).resolve().parents[2]


def _start(hash_seed: str, threads: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONHASHSEED": hash_seed,
        "NPROC": threads,  # XLA's CPU client sizes its intra-op thread pool from it
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "JAX_PLATFORMS": "cpu",
    }
    return subprocess.Popen(
        [sys.executable, str(HELPER)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_two_processes_prune_bit_identically_under_load():
    load = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        runs = [_start("1", "2"), _start("2", "8")]  # concurrent: each loads the other's CPU
        outputs = [run.communicate(timeout=600) for run in runs]
    finally:
        load.kill()
        load.wait()
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err.decode()[-2000:]
    first, second = (json.loads(out) for out, _ in outputs)
    assert first == second
    assert set(first) == {"sparsegpt", "wanda"}
