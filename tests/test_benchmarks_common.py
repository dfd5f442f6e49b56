"""The benchmarks' shared helpers: results record where they came from; configs parse alike."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("_common", ROOT / "benchmarks" / "_common.py")
common = importlib.util.module_from_spec(spec)
spec.loader.exec_module(common)


def test_write_json_records_versions_platform_and_the_git_commit(tmp_path):
    common.write_json(tmp_path / "r.json", {"ppl": 40.6})
    data = json.loads((tmp_path / "r.json").read_text())
    env = data["environment"]
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert data["ppl"] == 40.6
    assert env["git"]["commit"] == head
    assert env["packages"]["numpy"] == np.__version__
    assert set(common.PACKAGES) <= set(env["packages"])
    assert env["cpu_count"] >= 1 and env["python"].count(".") == 2


def test_write_json_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "r.json"
    common.write_json(path, {"ppl": 1.0})
    with pytest.raises(TypeError):
        common.write_json(path, {"ppl": object()})
    assert json.loads(path.read_text())["ppl"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_append_jsonl_adds_one_line_per_row(tmp_path):
    for i in range(2):
        common.append_jsonl(tmp_path / "r.jsonl", {"i": i})
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["i"] for r in rows] == [0, 1] and all("environment" in r for r in rows)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("owl+sparsegpt:0.7", ("sparsegpt", "0.7", "owl")),
        ("wanda:2:4", ("wanda", "2:4", "uniform")),
        ("llm-pruner:element1", ("llm-pruner", "element1", "uniform")),
        ("flap", ("flap", None, "uniform")),
        ("wanda+dsnot:0.7", ("wanda+dsnot", "0.7", "uniform")),
    ],
)
def test_parse_config_splits_allocation_method_and_argument(text, want):
    assert tuple(common.parse_config(text)) == want


def test_parse_config_refuses_a_missing_required_argument():
    with pytest.raises(SystemExit, match="METHOD:TARGET"):
        common.parse_config("sparsegpt", arg_name="target")


def test_import_original_refuses_a_folder_without_the_module(tmp_path):
    with pytest.raises(SystemExit, match="no lib/prune.py there"):
        common.import_original(tmp_path, "lib.prune")
