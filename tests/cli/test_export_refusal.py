"""`jaxprune export` refuses what transformers cannot hold from the config alone (exit 2), before
any weight is read; `--model` help lists every registered family."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from jaxprune.cli import GGUF_ARCHITECTURES, MODEL_TYPES, main
from jaxprune.models import FAMILIES, Gemma3Config, LanguageModel, Qwen2Config
from jaxprune.models.base import supported_model_types
from jaxprune.models.loaders import Pretrained, save_pruned

TINY = dict(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2)


def _checkpoint_without_weights(tmp_path, config):
    """A complete jaxprune checkpoint whose arrays are then deleted: loading it would fail."""
    model = LanguageModel(config)
    params = model.init_params(0)
    save_pruned(tmp_path / "m", Pretrained(model, params, None, "tiny"), params)
    shutil.rmtree(tmp_path / "m" / "arrays")
    return tmp_path / "m"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (Qwen2Config(**TINY, intermediate_sizes=(24, 20)), r"block 1 has \{'intermediate_size'"),
        (Gemma3Config(**TINY, head_dim=8, num_key_value_heads=1, mlp_bias=True), "no biases"),
    ],
)
def test_export_refuses_before_loading_weights(tmp_path, capsys, config, message):
    source = _checkpoint_without_weights(tmp_path, config)
    assert main(["export", "--model", str(source), "--out", str(tmp_path / "hf")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "hf").exists()


def test_export_refuses_a_hugging_face_directory_from_its_config_json(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    config = {"model_type": "qwen2", **TINY, "intermediate_size": 24, "hidden_act": "gelu"}
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert main(["export", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "hf")]) == 2
    assert "hidden_act 'gelu' is not supported" in capsys.readouterr().err


def test_model_help_lists_every_registered_family():
    assert sorted(MODEL_TYPES) == supported_model_types()
    gguf = sorted(f.gguf.architecture for f in FAMILIES.values() if f.gguf)
    assert sorted(GGUF_ARCHITECTURES) == gguf
