"""``constraints.txt`` pins versions that jaxprune's requirements accept and that pip resolves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from jaxprune.pipeline.versions import PACKAGES

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    found = {}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"not a NAME==VERSION pin: {line!r}"
            found[canonicalize_name(name)] = version.strip()
    return found


def test_every_pin_satisfies_the_projects_requirements():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = pins()
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is a dependency but not pinned"
        assert requirement.specifier.contains(pinned[name]), (text, pinned[name])


def test_the_recorded_versions_are_pinned():
    pinned = pins()
    assert {canonicalize_name(p) for p in PACKAGES if p != "jaxprune"} <= set(pinned)


@pytest.mark.slow
def test_pip_resolves_the_project_with_the_constraints(tmp_path):
    report = tmp_path / "report.json"
    argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q"]
    argv += ["--report", str(report), str(ROOT), "-c", str(ROOT / "constraints.txt")]
    subprocess.run(argv, check=True, timeout=1800)
    resolved = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    for name, version in pins().items():
        assert resolved[name] == version, name
