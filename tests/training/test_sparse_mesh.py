"""sparse_training on 8 simulated devices equals the single-device run (masks and weights).

``tests/helpers/sparse_mesh_check.py`` runs in a subprocess with 8 CPU devices (the device count
is fixed when JAX starts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _run_check(*flags: str) -> list[dict]:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    script = Path(__file__).parents[1] / "helpers" / "sparse_mesh_check.py"
    done = subprocess.run(
        [sys.executable, str(script), *flags], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def report() -> list[dict]:
    """The 2x4 mesh; the slow test adds 1x8."""
    return _run_check()


def test_every_updater_runs_sharded_over_the_mesh(report):
    assert {r["run"] for r in report} == {"gmp magnitude", "rigl", "ste"}
    for row in report:
        assert row["devices"] == 8
        assert row["pruned"] > 0
        assert "model" in row["kernel_spec"]


def test_masks_are_identical_and_weights_equal_to_rounding(report):
    _assert_equal_to_one_device(report)


@pytest.mark.slow
def test_on_a_1x8_mesh_too_masks_are_identical_and_weights_equal_to_rounding():
    report = _run_check("--all-meshes")
    assert {tuple(row["mesh"]) for row in report} == {(2, 4), (1, 8)}
    _assert_equal_to_one_device(report)


def _assert_equal_to_one_device(report: list[dict]) -> None:
    for row in report:
        assert row["mask_mismatches"] == 0, row
        assert row["max_weight_diff"] < 1e-5, row
