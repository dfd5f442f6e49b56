"""export --format: the automatic choice, and bad combinations refused before weights are read."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from structured_models import TINY_GQA, TINY_OPT, random_params, windows

from jaxprune.cli import main
from jaxprune.models import LanguageModel
from jaxprune.models.base import LayerWidths
from jaxprune.models.export_formats import check_format, export_model
from jaxprune.models.loaders import Pretrained, load_pretrained, save_pruned

UNEVEN = TINY_GQA.with_layer_widths(
    [LayerWidths(6, 3, 40), LayerWidths(2, 1, 17), LayerWidths(4, 2, 8)]
)


def test_the_automatic_choice_is_hf_for_equal_blocks_and_gguf_otherwise():
    assert check_format(None, TINY_GQA) == "hf"
    assert check_format(None, UNEVEN) == "gguf"
    assert check_format("nemotron-nas", UNEVEN) == "nemotron-nas"


@pytest.mark.parametrize(
    ("fmt", "config", "message"),
    [
        ("hf", UNEVEN, "block 1 has .* use format gguf .* or nemotron-nas"),
        ("compressed-tensors", UNEVEN, "needs every block the same widths"),
        ("gguf", TINY_OPT, "writes the llama family; this model is 'opt'"),
        ("nemotron-nas", TINY_OPT, "use format hf"),
        ("onnx", TINY_GQA, "unknown export format"),
    ],
)
def test_bad_combinations_are_refused_from_the_config(fmt, config, message):
    with pytest.raises(ValueError, match=message):
        check_format(fmt, config)


@pytest.fixture(scope="module")
def uneven_checkpoint(tmp_path_factory):
    model = LanguageModel(UNEVEN)
    path = tmp_path_factory.mktemp("ckpt") / "uneven"
    params = random_params(model)
    save_pruned(path, Pretrained(model, params, None, "uneven"), params)
    return path, model, params


def test_cli_refuses_hf_for_uneven_widths_before_reading_weights(
    tmp_path, capsys, uneven_checkpoint
):
    path, _, _ = uneven_checkpoint
    weightless = tmp_path / "weightless"
    shutil.copytree(path, weightless)
    shutil.rmtree(weightless / "arrays")  # any weight read would now fail differently
    out = tmp_path / "hf"
    assert main(["export", "--model", str(weightless), "--format", "hf", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "gguf" in err and "nemotron-nas" in err and not out.exists()


def test_cli_exports_uneven_widths_as_gguf_by_default(tmp_path, capsys, uneven_checkpoint):
    path, model, params = uneven_checkpoint
    out = tmp_path / "m.gguf"
    assert main(["export", "--model", str(path), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["format"] == "gguf"
    again = load_pretrained(out)
    tokens = windows(n=2)
    np.testing.assert_array_equal(
        np.asarray(again.model.logits(again.params, tokens)),
        np.asarray(model.logits(params, tokens)),
    )
    # the GGUF's own header is read before loading, too
    assert (
        main(["export", "--model", str(out), "--format", "hf", "--out", str(tmp_path / "x")]) == 2
    )


def test_compressed_tensors_of_a_dense_model_is_refused(tmp_path):
    model = LanguageModel(TINY_GQA)
    with pytest.raises(ValueError, match="no zero weights"):
        export_model(tmp_path / "ct", model, model.init_params(0), format="compressed-tensors")
    assert not (tmp_path / "ct").exists()


def test_export_help_says_nemotron_nas_needs_remote_code_in_transformers(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "trust_remote_code" in capsys.readouterr().out
