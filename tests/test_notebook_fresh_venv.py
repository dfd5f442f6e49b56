"""The example notebook executes top to bottom in a fresh virtual environment (slow): a clean copy
of the repository, a new venv holding only a Jupyter kernel, and ``jupyter nbconvert --execute``,
so the notebook's first cell installs jaxprune from the repository exactly as it tells users."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = Path("examples") / "recover_smollm2.ipynb"

pytestmark = pytest.mark.slow


def _clean_copy(target: Path) -> Path:
    """The repository's tracked files, as a fresh clone has them."""
    files = (
        subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def _fresh_kernel(root: Path) -> dict[str, str]:
    """A new venv with only ipykernel, registered as the kernel ``fresh``; returns the env."""
    venv.create(root / "venv", with_pip=True)
    python = root / "venv" / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "ipykernel"], check=True)
    spec = root / "jupyter" / "kernels" / "fresh"
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "fresh", "language": "python"})
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JAXPRUNE_INSTALL")}
    return {
        **env,
        "JUPYTER_PATH": str(root / "jupyter"),
        "JAXPRUNE_NOTEBOOK_SMALL": "1",
        "MPLBACKEND": "Agg",
    }


def test_the_notebook_installs_jaxprune_from_the_repository_and_runs_in_a_fresh_venv(tmp_path):
    clone = _clean_copy(tmp_path / "clone")
    env = _fresh_kernel(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--ExecutePreprocessor.kernel_name=fresh",
            "--ExecutePreprocessor.timeout=1800",
            "--output-dir",
            str(tmp_path / "out"),
            str(clone / NOTEBOOK),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    executed = json.loads((tmp_path / "out" / NOTEBOOK.name).read_text())
    text = "".join(
        "".join(out.get("text", ""))
        for cell in executed["cells"]
        if cell["cell_type"] == "code"
        for out in cell.get("outputs", [])
    )
    assert f"installing jaxprune[eval,plots] from {clone.resolve().as_uri()}" in text
    assert "Hamlet perplexity after LoRA" in text
    assert (tmp_path / "venv" / "bin" / "jaxprune").is_file()  # installed into the fresh venv
