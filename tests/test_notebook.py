"""The example notebook runs top to bottom (small configuration) with a minimal runner: every
code cell is executed in order in one namespace, as a kernel would."""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "recover_smollm2.ipynb"


def test_example_notebook_runs_top_to_bottom(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXPRUNE_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    namespace: dict = {"__name__": "__main__"}
    for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
        exec(compile("".join(cell["source"]), f"{NOTEBOOK.name}[code cell {i}]", "exec"), namespace)
    assert namespace["after_ppl"] < namespace["pruned_ppl"]
    assert namespace["png"].is_file()
    kernel = namespace["recovered"].params["layers"][0]["mlp"]["up_proj"]["kernel"]
    assert abs(float((kernel == 0).mean()) - 0.7) < 0.01
