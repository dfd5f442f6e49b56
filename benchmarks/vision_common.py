"""Shared pieces of the vision benchmarks: results file, optimizer, timing, machine record.

Results are one JSON file holding ``{"machine": ..., "settings": ..., "runs": [...]}``, rewritten
atomically after every run; a run already in the file (same key) is skipped when the script is
started again, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from _common import write_json

from jaxprune.core.paths import flat_leaves

KEY_FIELDS = ("dataset", "seed", "method", "sparsity")


def adam_cosine(lr: float, steps: int) -> optax.GradientTransformation:
    """Adam with a cosine decay of the learning rate from ``lr`` to 0 over ``steps``."""
    return optax.adam(optax.cosine_decay_schedule(lr, max(steps, 1)))


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
    }


class Results:
    """The runs of one benchmark file, keyed by ``KEY_FIELDS``."""

    def __init__(self, path: Path, settings: dict[str, Any]):
        self.path = path
        self.data = {"machine": machine(), "settings": settings, "runs": []}
        if path.is_file():
            old = json.loads(path.read_text())
            if old.get("settings") != settings:
                raise SystemExit(
                    f"{path} was written with other settings {old.get('settings')}; "
                    "use another --out or delete it"
                )
            self.data["runs"] = old["runs"]

    @staticmethod
    def key(record: dict[str, Any]) -> tuple:
        return tuple(record.get(k) for k in KEY_FIELDS)

    def has(self, **key) -> bool:
        want = self.key(key)
        return any(self.key(r) == want for r in self.data["runs"])

    def add(self, record: dict[str, Any]) -> None:
        self.data["runs"].append(record)
        write_json(self.path, self.data, indent=1)
        shown = {k: v for k, v in record.items() if k not in ("history",)}
        print(json.dumps(shown), flush=True)


def timed(fn: Callable, *args, **kwargs) -> tuple[Any, float, float]:
    """``(fn(...), wall seconds, process CPU seconds)``; JAX results are waited for."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return out, time.perf_counter() - wall, time.process_time() - cpu


def zero_fraction(params: Any, paths: list[str]) -> float:
    """Fraction of exact zeros over the leaves at ``paths``."""
    leaves = flat_leaves(params)
    zeros = sum(int(np.sum(np.asarray(leaves[p]) == 0)) for p in paths)
    return zeros / sum(int(np.size(leaves[p])) for p in paths)


def epoch_seconds(history: list[dict[str, float]]) -> tuple[float, float]:
    """Wall and CPU seconds of a run from its per-epoch history (compilation included)."""
    return sum(h["seconds"] for h in history), sum(h["cpu_seconds"] for h in history)
