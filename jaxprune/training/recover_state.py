"""The saved state of a recovery run: trained values, optimizer state, step and history.

Saved atomically (:mod:`jaxprune.checkpoint`) so that a run resumed from it ends with the same
params as an uninterrupted one; a state is only resumed by the run that wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune.checkpoint import load_checkpoint, save_checkpoint

STATE_KIND = "jaxprune-recovery-state"


def restore_state(directory: Path, config: Any, trained: Any, opt_state: Any):
    """``(trained, opt_state, step, history)`` from a saved state, checked against ``config``."""
    saved = load_checkpoint(directory)
    same = json.loads(json.dumps(config.to_dict()))  # as stored: tuples become lists
    if saved.config.get("kind") != STATE_KIND or saved.config.get("recover") != same:
        raise ValueError(
            f"{directory} holds a recovery state of a different run; resume with the same "
            "arguments, or give a new checkpoint directory"
        )
    treedef = jax.tree.structure(opt_state)
    leaves = [saved.params["opt"][str(i)] for i in range(treedef.num_leaves)]
    restored = jax.tree.map(
        lambda ref, x: jnp.asarray(x, ref.dtype), trained, saved.params["trained"]
    )
    return restored, jax.tree.unflatten(treedef, leaves), saved.config["step"], saved.report


def save_state(directory: Path, config: Any, trained, opt_state, step: int, history) -> None:
    leaves = {str(i): leaf for i, leaf in enumerate(jax.tree.leaves(opt_state))}
    save_checkpoint(
        directory,
        {"trained": trained, "opt": leaves},
        config={"kind": STATE_KIND, "step": step, "recover": config.to_dict()},
        report=history,
        overwrite=True,
    )


__all__ = ["STATE_KIND", "restore_state", "save_state"]
