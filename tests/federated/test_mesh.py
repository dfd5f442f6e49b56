"""The client axis sharded over 2 devices gives the single-device run's model (a subprocess with
2 CPU devices: the device count is fixed when JAX starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow  # ~20 s: a subprocess compiling the round twice
def test_sharded_clients_equal_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    script = Path(__file__).parents[1] / "helpers" / "federated_mesh_check.py"
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2 and report["placed_devices"] == 2
    assert "'clients'" in report["spec"]
    assert report["max_param_diff"] < 1e-5
    assert report["accuracy"] == report["accuracy_single"]
