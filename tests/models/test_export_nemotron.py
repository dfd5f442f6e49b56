"""Nemotron-NAS export: the layout's schema, and a DeciLM forward over the written files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from structured_models import TINY_GQA, logits, random_params, windows
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM

from jaxprune.models import LanguageModel
from jaxprune.models.base import LayerWidths
from jaxprune.models.export_nemotron import export_nemotron_nas

UNEVEN = TINY_GQA.with_layer_widths(
    [LayerWidths(6, 3, 40), LayerWidths(2, 1, 300), LayerWidths(4, 2, 8)]
)


def ffn_width(ffn_mult: float, hidden: int) -> int:
    """DeciLM's _ffn_mult_to_intermediate_size, as its modeling code reads block_configs."""
    width = int(2 * ffn_mult * hidden / 3)
    return width if width % 256 == 0 else width + 256 - width % 256


def decilm_from_files(directory) -> LlamaForCausalLM:
    """A DeciLM built the way its modeling code does: LLaMA layers whose key/value heads and MLP
    width come from block_configs (LlamaAttention infers the query heads from q_proj)."""
    config = json.loads((directory / "config.json").read_text())
    heads, hidden, hd = config["num_attention_heads"], config["hidden_size"], config["head_dim"]
    hf = HFLlamaConfig(
        **{k: config[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "head_dim")},
        **{k: config[k] for k in ("rms_norm_eps", "rope_theta", "tie_word_embeddings")},
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=8,
        attention_bias=config["attention_bias"],
        mlp_bias=config["mlp_bias"],
    )
    model = LlamaForCausalLM(hf)
    for layer, block in zip(model.model.layers, config["block_configs"], strict=True):
        kv = heads // block["attention"]["n_heads_in_group"]
        ffn = ffn_width(block["ffn"]["ffn_mult"], hidden)
        attn, mlp, bias = layer.self_attn, layer.mlp, config["attention_bias"]
        attn.num_key_value_groups = block["attention"]["n_heads_in_group"]
        attn.k_proj = torch.nn.Linear(hidden, kv * hd, bias=bias)
        attn.v_proj = torch.nn.Linear(hidden, kv * hd, bias=bias)
        mlp.gate_proj = torch.nn.Linear(hidden, ffn, bias=config["mlp_bias"])
        mlp.up_proj = torch.nn.Linear(hidden, ffn, bias=config["mlp_bias"])
        mlp.down_proj = torch.nn.Linear(ffn, hidden, bias=config["mlp_bias"])
    state = {k: torch.from_numpy(v) for k, v in load_file(directory / "model.safetensors").items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing)
    if config["tie_word_embeddings"]:
        model.tie_weights()
    return model.eval()


@pytest.mark.parametrize("biases", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_decilm_forward_over_the_written_files_gives_our_logits(tmp_path, biases):
    config = UNEVEN.with_output_biases() if biases else UNEVEN
    model = LanguageModel(config)
    params = random_params(model)
    summary = export_nemotron_nas(tmp_path / "nas", model, params)
    written = summary["config"]
    assert written["architectures"] == ["DeciLMForCausalLM"]
    assert written["model_type"] == "nemotron-nas"
    assert written["num_attention_heads"] == 6  # the fewest heads every block reaches by padding
    blocks = written["block_configs"]
    assert [6 // b["attention"]["n_heads_in_group"] for b in blocks] == [3, 1, 2]
    assert [ffn_width(b["ffn"]["ffn_mult"], 48) for b in blocks] == [256, 512, 256]
    assert summary["padding"] > 0
    tokens = windows(n=2)
    with torch.no_grad():
        theirs = decilm_from_files(tmp_path / "nas")(torch.as_tensor(tokens)).logits.numpy()
    ours = logits(model, params, tokens)
    assert np.abs(ours).max() > 0.5
    np.testing.assert_allclose(theirs, ours, atol=1e-4)


def test_tensor_names_are_llamas(tmp_path):
    model = LanguageModel(UNEVEN)
    export_nemotron_nas(tmp_path / "nas", model, random_params(model))
    names = set(load_file(tmp_path / "nas" / "model.safetensors"))
    assert "model.layers.2.mlp.down_proj.weight" in names and "lm_head.weight" in names
    assert all(n.startswith(("model.", "lm_head.")) for n in names)
