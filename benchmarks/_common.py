"""What every benchmark script shares: its results file, the record of where it ran, configs.

Scripts in ``benchmarks/`` import it as ``from _common import ...`` (Python puts a script's own
folder on ``sys.path``); the cross-check drivers run as ``python -m benchmarks.xcheck.NAME`` from
the repository root and import ``benchmarks._common``.

Every JSON result carries ``"environment"`` (:func:`environment`): the package versions, the
Python and platform, the CPU count and the git commit the numbers came from, so a result file
alone says what produced it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jax", "jaxlib", "flax", "numpy", "scipy", "optax")
# Recorded only when the run imported them (the cross-checks and the HF export paths do).
OPTIONAL_PACKAGES = ("torch", "transformers", "lm_eval", "datasets")


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(repo: Path = ROOT) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout at ``repo``."""

    def git(*argv: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(repo), *argv], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def environment() -> dict[str, Any]:
    """Package versions, Python, platform, CPU count, JAX device and git commit of this run."""
    packages = {name: _version(name) for name in PACKAGES}
    packages.update({name: _version(name) for name in OPTIONAL_PACKAGES if name in sys.modules})
    env: dict[str, Any] = {
        "packages": packages,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "git": git_commit(),
    }
    if "jax" in sys.modules:  # never import jax (and start its backend) just to record it
        env["device"] = str(sys.modules["jax"].devices()[0].device_kind)
    if "jaxprune" in sys.modules:  # which tree ran (a snapshot may differ from this checkout)
        env["jaxprune_path"] = str(Path(sys.modules["jaxprune"].__file__).parent)
        from jaxprune.pipeline.versions import lapack_kernels

        env["lapack"] = lapack_kernels()  # the CPU kernels of the Cholesky factorisations
    return env


def write_json(path: str | Path, data: dict[str, Any], *, indent: int = 2) -> None:
    """Write ``data`` and ``"environment"`` to ``path`` atomically (a crash keeps the old file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({**data, "environment": environment()}, f, indent=indent, default=float)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_jsonl(path: str | Path, row: dict[str, Any]) -> str:
    """Append ``row`` plus ``"environment"`` as one JSON line to ``path``; returns the line."""
    path = Path(path)
    line = json.dumps({**row, "environment": environment()}, default=float)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(line + "\n")
    return line


def protocol_windows(
    tokenizer: Any, nsamples: int, seqlen: int, eval_nsamples: int, seed: int
) -> tuple[Any, Any]:
    """The public protocol's windows: ``shakespeare-calib`` ``nsamples`` × ``seqlen`` drawn
    with ``seed`` (calibration), ``shakespeare-hamlet`` ``eval_nsamples`` × ``seqlen`` (eval)."""
    import jaxprune as jp

    calib = jp.load_windows(
        "shakespeare-calib", tokenizer, nsamples=nsamples, seqlen=seqlen, seed=seed, split="calib"
    )
    evalw = jp.load_windows(
        "shakespeare-hamlet", tokenizer, nsamples=eval_nsamples, seqlen=seqlen, split="eval"
    )
    return calib, evalw


def with_bos(windows: Any, bos: int) -> Any:
    """Each window as BOS followed by its first ``seqlen - 1`` tokens."""
    import numpy as np

    return np.concatenate([np.full((windows.shape[0], 1), bos, windows.dtype), windows[:, :-1]], 1)


class Config(NamedTuple):
    """One ``--configs`` entry: ``[ALLOCATION+]METHOD[:ARG]``."""

    method: str
    arg: str | None  # everything after the first ':' (a target "0.5" / "2:4", an importance)
    allocation: str  # "uniform" unless written as a prefix ("owl+sparsegpt:0.7")


def parse_config(text: str, *, arg_name: str | None = None) -> Config:
    """``"owl+sparsegpt:0.7"`` → ``Config("sparsegpt", "0.7", "owl")``; ``"wanda+dsnot:0.7"`` →
    ``Config("wanda+dsnot", "0.7", "uniform")`` (a method refined by a registered refinement).

    Args:
      text: the entry as typed.
      arg_name: when given, the part after ``:`` is required and the error names it.

    Raises:
      SystemExit: a required part is missing (a one-line message with an example).
    """
    head, _, arg = text.partition(":")
    allocation, _, method = head.partition("+")
    if allocation != "owl":  # "wanda+dsnot": a method refined by a registered refinement
        allocation, method = "", head
    if arg_name is not None and not arg:
        raise SystemExit(
            f"configuration {text!r}: write METHOD:{arg_name.upper()}, e.g. {method}:0.5"
        )
    return Config(method, arg or None, allocation or "uniform")


def import_original(repo_dir: str | Path, module: str, *, marker: str | None = None) -> Any:
    """Import ``module`` from a checkout of an original research repository (never copied here).

    The checkout's root goes first on ``sys.path`` so its own intra-repository imports resolve.

    Raises:
      SystemExit: ``repo_dir`` is not a checkout holding ``marker`` (default: the module's file).
    """
    root = Path(repo_dir).resolve()
    expected = root / (marker or module.replace(".", "/") + ".py")
    if not expected.exists():
        raise SystemExit(
            f"--repo-dir {repo_dir}: no {expected.relative_to(root)} there; pass a checkout of "
            "the original repository at the commit the driver names"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(module)
