"""Hugging Face directories: loaded by the family of their model_type, every mismatch named."""

import json

import numpy as np
import pytest
import torch
from llama_files import (
    hf_llama,
    logits,
    save_hf,
    torch_logits,
)
from safetensors.numpy import load_file, save_file

from jaxprune.models.loaders import load_pretrained
from jaxprune.models.loaders.hf import load_hf_checkpoint


def test_hf_directory_loads_with_its_tokenizer(tmp_path, trained_tokenizer):
    loaded = load_pretrained(save_hf(tmp_path, trained_tokenizer))
    assert loaded.source == str(tmp_path)
    assert loaded.tokenizer.encode("hello") == trained_tokenizer.encode("hello").ids
    # bos/eos fall back to config.json when there is no tokenizer_config.json
    assert (loaded.tokenizer.bos_token_id, loaded.tokenizer.eos_token_id) == (1, 2)


def test_unsupported_model_type_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(
        ValueError, match="'gpt_neox' is not supported.*llama, mistral, mixtral, opt"
    ):
        load_pretrained(tmp_path)


def test_missing_tensor_is_named(tmp_path):
    save_hf(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing model\.layers\.1\.mlp\.up_proj\.weight"):
        load_hf_checkpoint(tmp_path)


def test_unexpected_tensor_is_named(tmp_path):
    save_hf(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["model.layers.0.self_attn.q_proj.bias"] = np.zeros(64, np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected model\.layers\.0\.self_attn\.q_proj\.bias"):
        load_hf_checkpoint(tmp_path)


def test_misshapen_tensor_is_named(tmp_path):
    save_hf(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["model.norm.weight"] = np.ones(63, np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"model\.norm\.weight has shape \(63,\), expected \(64,\)"
    ):
        load_hf_checkpoint(tmp_path)


def test_pytorch_pickles_only_get_a_conversion_hint(tmp_path):
    save_hf(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="safe_serialization=True"):
        load_pretrained(tmp_path)


def test_unsupported_architecture_feature_is_rejected(tmp_path):
    save_hf(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    with pytest.raises(ValueError, match="hidden_act 'gelu' is not supported"):
        load_pretrained(tmp_path)


def test_llama_with_attention_and_mlp_biases_matches_transformers(tmp_path):
    model = hf_llama(96, seed=3, tie=False, attention_bias=True, mlp_bias=True)
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.model.config.attention_bias and loaded.model.config.mlp_bias
    assert loaded.params["layers"][1]["mlp"]["down_proj"]["bias"].shape == (64,)
    tokens = np.random.default_rng(0).integers(0, 96, size=(2, 16))
    np.testing.assert_allclose(
        logits(loaded, tokens), torch_logits(model, tokens), atol=1e-4, rtol=0
    )


def test_opt_checkpoint_is_loaded_by_the_opt_family(tmp_path):
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(
        vocab_size=80,
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        word_embed_proj_dim=32,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = OPTForCausalLM(config).eval()
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.model.config.family == "opt"
    tokens = np.random.default_rng(0).integers(0, 80, size=(2, 16))
    np.testing.assert_allclose(
        logits(loaded, tokens), torch_logits(model, tokens), atol=1e-4, rtol=0
    )
