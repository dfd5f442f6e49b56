"""Hugging Face export: transformers' torch model loads it and gives our logits."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from tiny_models import TINY_LLAMA
from transformers import AutoModelForCausalLM, AutoTokenizer

from jaxprune.core.paths import get_leaf, select_paths, set_leaves
from jaxprune.models import LanguageModel, LlamaConfig
from jaxprune.models.export import export_hf
from jaxprune.models.loaders import load_pretrained
from jaxprune.models.tokenizer import Tokenizer

TOKENS = np.random.default_rng(0).integers(0, 64, size=(2, 20))
# Logits are O(1): a max |Δ| of 1e-4 is float32 rounding between the two implementations.
TOLERANCE = 1e-4


def scaled_params(model, seed=0):
    """Random params with O(1) logits (init_params' 0.02 scale makes every logit tiny)."""
    params = model.init_params(seed)
    key = jax.random.key(seed + 1)
    return jax.tree.map(
        lambda x: (
            x * 25.0 / x.shape[0] ** 0.5
            if x.ndim == 2
            else x + 0.3 * jax.random.normal(key, x.shape)
        ),
        params,
    )


def pruned(params, density=0.5):
    rng = np.random.default_rng(3)
    paths = select_paths(params, r"layers/\d+/(self_attn|mlp)/\w+_proj/kernel")
    return set_leaves(
        params,
        {p: get_leaf(params, p) * (rng.random(get_leaf(params, p).shape) < density) for p in paths},
    )


def torch_logits(directory, tokens):
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.numpy()


@pytest.mark.parametrize("tie", [True, False])
def test_exported_pruned_model_gives_our_logits_in_transformers(tmp_path, tie):
    config = LlamaConfig(**{**TINY_LLAMA.to_dict(), "tie_word_embeddings": tie, "rope_theta": 5e4})
    model = LanguageModel(config)
    params = pruned(scaled_params(model))
    export_hf(tmp_path / "hf", model, params)
    ours = np.asarray(model.logits(params, jnp.asarray(TOKENS)))
    theirs = torch_logits(tmp_path / "hf", TOKENS)
    assert np.abs(ours).max() > 1.0
    assert np.abs(ours - theirs).max() < TOLERANCE
    again = load_pretrained(tmp_path / "hf")
    np.testing.assert_allclose(
        again.model.logits(again.params, jnp.asarray(TOKENS)), ours, atol=1e-5
    )


def test_biases_from_flap_compensation_travel_to_transformers(tmp_path):
    model = LanguageModel(TINY_LLAMA.with_output_biases())
    params = scaled_params(model)  # biases random, O(0.3)
    assert np.abs(np.asarray(params["layers"][0]["mlp"]["down_proj"]["bias"])).max() > 0.1
    summary = export_hf(tmp_path / "hf", model, params)
    assert summary["config"]["attention_bias"] and summary["config"]["mlp_bias"]
    ours = np.asarray(model.logits(params, jnp.asarray(TOKENS)))
    assert np.abs(ours - torch_logits(tmp_path / "hf", TOKENS)).max() < TOLERANCE


def test_uniformly_shrunk_model_exports_its_real_widths(tmp_path):
    model = LanguageModel(TINY_LLAMA)
    params = scaled_params(model)
    keep = np.arange(48)  # every block keeps the first 48 of its 64 MLP channels
    for i in (0, 1):
        mlp = params["layers"][i]["mlp"]
        mlp["gate_proj"]["kernel"] = mlp["gate_proj"]["kernel"][:, keep]
        mlp["up_proj"]["kernel"] = mlp["up_proj"]["kernel"][:, keep]
        mlp["down_proj"]["kernel"] = mlp["down_proj"]["kernel"][keep, :]
    summary = export_hf(tmp_path / "hf", model, params)
    assert summary["config"]["intermediate_size"] == 48
    ours = np.asarray(model.logits(params, jnp.asarray(TOKENS)))
    assert np.abs(ours - torch_logits(tmp_path / "hf", TOKENS)).max() < TOLERANCE


def test_blocks_of_different_widths_are_refused_naming_why(tmp_path):
    model = LanguageModel(TINY_LLAMA)
    params = model.init_params(0)
    mlp = params["layers"][1]["mlp"]
    for name in ("gate_proj", "up_proj"):
        mlp[name]["kernel"] = mlp[name]["kernel"][:, :40]
    mlp["down_proj"]["kernel"] = mlp["down_proj"]["kernel"][:40]
    with pytest.raises(ValueError, match=r"block 1 has \{'intermediate_size': \(64, 40\)\}"):
        export_hf(tmp_path / "hf", model, params)
    assert not (tmp_path / "hf").exists() and not list(tmp_path.iterdir())


def test_tokenizer_travels_and_transformers_reads_it(tmp_path, trained_tokenizer):
    vocab = trained_tokenizer.get_vocab_size()
    config = LlamaConfig(**{**TINY_LLAMA.to_dict(), "vocab_size": vocab})
    model = LanguageModel(config)
    tokenizer = Tokenizer(trained_tokenizer, bos_token_id=1, eos_token_id=2)
    export_hf(tmp_path / "hf", model, model.init_params(0), tokenizer)
    text = "To be, or not to be"
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == tokenizer.encode(text)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llama"


def test_existing_directory_is_not_overwritten_unless_asked(tmp_path):
    model = LanguageModel(TINY_LLAMA)
    (tmp_path / "hf").mkdir()
    with pytest.raises(ValueError, match="exists"):
        export_hf(tmp_path / "hf", model, model.init_params(0))
    export_hf(tmp_path / "hf", model, model.init_params(0), overwrite=True)
    assert (tmp_path / "hf" / "model.safetensors").is_file()
