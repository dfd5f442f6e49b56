"""The package keeps its shape: layered imports, small modules, short functions.

These are the rules of ``docs/design.md`` ("Module map and import rules"), checked on every test run
so that a change which breaks them fails CI instead of slowly eroding the layout.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxprune"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 100
# The numeric kernels may be longer: each is one algorithm that reads best in one piece.
NUMERIC_KERNELS = {"methods/sparsegpt_sweep.py:sweep", "methods/sparsellm.py:prune_mlp"}


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_import_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which(
        "lint-imports"
    )
    if exe is None:
        pytest.fail("lint-imports is not installed; install the test extra: pip install -e .[test]")
    done = subprocess.run(
        [exe, "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it"


def test_functions_stay_short_except_the_numeric_kernels():
    long = []
    for path in _modules():
        for fn in _functions(ast.parse(path.read_text())):
            name = f"{path.relative_to(PACKAGE).as_posix()}:{fn.name}"
            size = fn.end_lineno - fn.lineno + 1
            if size > MAX_FUNCTION_LINES and name not in NUMERIC_KERNELS:
                long.append((name, size))
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_engine_loop_reads_in_one_screen():
    tree = ast.parse((PACKAGE / "engine" / "prune.py").read_text())
    (prune,) = [fn for fn in _functions(tree) if fn.name == "prune"]
    body = prune.body[1:] if isinstance(prune.body[0], ast.Expr) else prune.body  # no docstring
    lines = body[-1].end_lineno - body[0].lineno + 1
    assert lines <= 60, f"engine.prune's body has {lines} lines"
