"""Report plots: per-block means from a prune report, one PNG with the panels the report has."""

from __future__ import annotations

import json

import pytest
from structured_models import TINY_GQA, random_params, windows

from jaxprune import cli
from jaxprune.eval.plots import block_summary, block_widths, plot_report, report_figure
from jaxprune.models import LanguageModel
from jaxprune.structured import StructuredRecipe, prune_structured

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


STRUCTURED = {
    "method": "flap",
    "sparsity": 0.2,
    "removed_fraction": 0.2,
    "widths_before": [[9, 3, 1536], [9, 3, 1536], [9, 3, 1536]],
    "widths": [[6, 3, 1200], [9, 3, 1000], [3, 3, 1536]],
}


def test_block_widths_reads_a_structured_reports_kept_and_dense_widths():
    assert block_widths(STRUCTURED) == {
        "heads": [6, 9, 3],
        "mlp": [1200, 1000, 1536],
        "heads_before": [9, 9, 9],
        "mlp_before": [1536, 1536, 1536],
    }
    assert block_widths(PRUNE) == {}


def test_a_structured_report_plots_kept_heads_and_channels_per_block(tmp_path):
    fig = report_figure(STRUCTURED)
    heads, mlp = fig.axes
    kept = [p.get_height() for p in heads.patches if p.get_facecolor()[3] > 0]
    assert kept == [6, 9, 3]
    assert [p.get_height() for p in mlp.patches][3:] == [1200, 1000, 1536]  # after the dense
    assert "MLP channels" in mlp.get_title() and "20% removed" in mlp.get_title()
    assert plot_report(STRUCTURED, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_a_report_without_errors_says_so_on_the_error_panel():
    wanda = {
        "method": "wanda",
        "target": "0.5",
        "layers": {"layers/0/mlp/up_proj/kernel": {"sparsity": 0.5}},
    }
    errors = report_figure(wanda).axes[1]
    assert not errors.lines
    assert "not in this report: wanda" in " ".join(t.get_text() for t in errors.texts)
    measured = report_figure(PRUNE).axes[1]
    assert measured.lines and not measured.texts


def test_the_cli_plots_the_report_of_a_real_structured_prune(tmp_path, capsys):
    model = LanguageModel(TINY_GQA)
    recipe = StructuredRecipe(method="flap", sparsity=0.2, nsamples=4, seqlen=12)
    result = prune_structured(model, random_params(model), windows(), recipe, progress=False)
    (tmp_path / "report.json").write_text(json.dumps({"model": "tiny", **result.report}))
    assert cli.main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.startswith("wrote ")
