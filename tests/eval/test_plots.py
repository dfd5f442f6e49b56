"""Report plots: per-block means from a prune report, one PNG with the panels the report has."""

from __future__ import annotations

import json

import pytest

from jaxprune.eval.plots import block_summary, plot_report

PRUNE = {
    "method": "sparsegpt",
    "target": "0.7",
    "layers": {
        "layers/0/mlp/up_proj/kernel": {"sparsity": 0.6, "rel_error": 0.01},
        "layers/0/mlp/down_proj/kernel": {"sparsity": 0.8, "rel_error": 0.03},
        "layers/1/self_attn/q_proj/kernel": {"sparsity": 0.7, "rel_error": 0.2},
        "lm_head/kernel": {"sparsity": 0.5, "rel_error": 9.0},
    },
}
RECOVERY = {
    "method": "lora",
    "loss": [[1, 3.0], [2, 2.5], [3, 2.2]],
    "eval": [[0, 120.0], [3, 80.0]],
}


def test_block_summary_averages_each_blocks_linears():
    summary = block_summary(PRUNE)
    assert summary == {
        0: {"sparsity": pytest.approx(0.7), "rel_error": pytest.approx(0.02)},
        1: {"sparsity": pytest.approx(0.7), "rel_error": pytest.approx(0.2)},
    }


def test_png_from_a_report_file_with_prune_and_recovery(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**PRUNE, "recovery": RECOVERY}))
    png = plot_report(path)
    assert png == tmp_path / "report.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_dict_needs_an_output_path_and_an_empty_report_is_refused(tmp_path):
    with pytest.raises(ValueError, match="give out="):
        plot_report(RECOVERY)
    assert plot_report(RECOVERY, tmp_path / "r.png").is_file()
    with pytest.raises(ValueError, match="neither per-layer"):
        plot_report({"method": "x"}, tmp_path / "x.png")
