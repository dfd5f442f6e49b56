"""Stopping a save at any moment (Ctrl-C, SIGTERM, kill -9) leaves no half-written files behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax.numpy as jnp
import pytest

from jaxprune.checkpoint import load_checkpoint, save_checkpoint

# Saves ~100 MB (several Orbax arrays, so a signal can land in any phase of the save).
CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    from jaxprune.checkpoint import save_checkpoint
    rng = np.random.default_rng(0)
    params = {f"w{i}": rng.normal(size=(1024, 1024)).astype(np.float32) for i in range(24)}
    print("start", flush=True)
    save_checkpoint(sys.argv[1], params, config={"family": "test"})
    print("done", flush=True)
    """
)


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize(
    ("sig", "delay"),
    [
        (signal.SIGINT, 0.0),
        (signal.SIGINT, 0.05),
        (signal.SIGINT, 0.3),
        (signal.SIGINT, 1.0),
        (signal.SIGTERM, 0.05),
        (signal.SIGTERM, 0.5),
    ],
)
def test_an_interrupted_save_leaves_nothing_or_a_complete_checkpoint(tmp_path, sig, delay):
    target = tmp_path / "ckpt"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "start"
    time.sleep(delay)
    child.send_signal(sig)
    child.wait(timeout=120)
    assert leftovers(tmp_path) == [], child.stderr.read()[-2000:]
    if target.exists():  # the signal came after the rename: the checkpoint must be whole
        assert len(load_checkpoint(target).params) == 24


def test_the_next_save_sweeps_what_a_killed_process_left(tmp_path):
    dead = tmp_path / ".c.tmp-999999999-abc"  # no such process
    dead.mkdir()
    (dead / "arrays").mkdir()
    alive = tmp_path / f".c.tmp-{os.getpid()}-xyz"  # a save of a live process: not touched
    alive.mkdir()
    save_checkpoint(tmp_path / "c", {"w": jnp.ones(3)}, config={})
    assert not dead.exists() and alive.exists()
    assert load_checkpoint(tmp_path / "c").config == {}
