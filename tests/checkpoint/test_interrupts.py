"""Stopping a save at any moment (Ctrl-C, SIGTERM, kill -9) leaves no half-written files behind,
and the program stops: an interrupt during a save is never lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax.numpy as jnp
import pytest

from jaxprune.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]

# Saves ~100 MB (several Orbax arrays, so a signal can land in any phase of the save).
CHILD = textwrap.dedent(
    """
    import signal, sys, time, numpy as np
    from jaxprune.checkpoint import save_checkpoint
    # As in a terminal: a test runner started in the background (nohup, `&`) hands its children
    # SIGINT ignored, and Python then installs no KeyboardInterrupt handler at all.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = np.random.default_rng(0)
    params = {f"w{i}": rng.normal(size=(1024, 1024)).astype(np.float32) for i in range(24)}
    print("start", flush=True)
    save_checkpoint(sys.argv[1], params, config={"family": "test"})
    print("done", flush=True)
    time.sleep(30)  # a lost interrupt would let the program go on (and exit 0) from here
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
def test_an_interrupted_save_stops_and_leaves_nothing_or_a_complete_checkpoint(
    tmp_path, sig, delay
):
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
    out, err = child.communicate(timeout=120)
    assert child.returncode != 0, (out, err[-2000:])  # stopped, not ignored
    assert leftovers(tmp_path) == [], err[-2000:]
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


@pytest.mark.slow
def test_ctrl_c_while_the_cli_saves_exits_130_and_leaves_nothing_half_written(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
    from tiny_checkpoint import save_tiny_model

    model = save_tiny_model(tmp_path / "model")
    out = tmp_path / "pruned"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    argv = ["prune", "--model", str(model), "--method", "magnitude", "--seqlen", "16"]
    argv += ["--out", str(out)]
    child = subprocess.Popen(
        [sys.executable, "-m", "jaxprune.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    for line in child.stderr:
        if "saving to" in line:
            child.send_signal(signal.SIGINT)
            break
    out_text, err = child.communicate(timeout=300)
    assert child.returncode == 130, err
    assert "jaxprune prune: interrupted; " in err and "saved to" not in out_text
    assert leftovers(tmp_path) == []
    if out.exists():  # the interrupt came after the rename: the checkpoint is whole
        assert load_checkpoint(out).config["num_hidden_layers"] == 2
