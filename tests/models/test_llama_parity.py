"""A Hugging Face LLaMA/Mistral checkpoint loaded by jaxprune gives the logits PyTorch gives."""

import copy
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM as HFLlamaForCausalLM
from transformers import MistralConfig, MistralForCausalLM

from jaxprune.models import LanguageModel
from jaxprune.models.loaders.hf import load_hf_checkpoint

# rope_theta differs from the 10000 default everywhere, so dropping it would show.
BASE = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    rope_theta=50000.0,
)
LLAMA3_ROPE = dict(
    rope_theta=500000.0,
    # head_dim 8 gives wavelengths ~6, ~167, ~4.4e3, ~1.2e5: one short (kept), one medium
    # (smoothed) and two long (divided by factor) relative to original_max_position_embeddings.
    rope_scaling={
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 256,
    },
)
CASES = {
    "tied": dict(tie_word_embeddings=True),
    "untied": dict(tie_word_embeddings=False),
    "gqa": dict(num_key_value_heads=2, tie_word_embeddings=False),
    "head_dim_not_hidden_over_heads": dict(head_dim=16, num_key_value_heads=2),
    "llama3_rope": dict(LLAMA3_ROPE, num_key_value_heads=2),
}
SEQ = 40


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights large enough that logits are O(1), so a 1e-4 tolerance actually tests something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 2 and "embed_tokens" not in name:
                p.copy_(noise / p.shape[1] ** 0.5)
            else:
                p.copy_(noise)
    return model.eval()


def _tokens(vocab: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(2, SEQ))


def _torch_logits(model: torch.nn.Module, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.float().numpy()


def _jax_logits(directory, tokens: np.ndarray, dtype=jnp.float32) -> np.ndarray:
    loaded = load_hf_checkpoint(directory, dtype=dtype)
    return np.asarray(loaded.model.logits(loaded.params, jnp.asarray(tokens)), dtype=np.float32)


def _llama(seed: int = 0, **overrides) -> HFLlamaForCausalLM:
    config = HFLlamaConfig(**{**BASE, **overrides})
    config._attn_implementation = "eager"
    return _randomise(HFLlamaForCausalLM(config), seed)


@pytest.mark.parametrize("case", sorted(CASES))
def test_llama_logits_match_pytorch(tmp_path, case):
    model = _llama(**CASES[case])
    model.save_pretrained(tmp_path)
    tokens = _tokens(BASE["vocab_size"])
    expected = _torch_logits(model, tokens)
    assert expected.std() > 0.5
    np.testing.assert_allclose(_jax_logits(tmp_path, tokens), expected, atol=1e-4, rtol=0)


def test_sharded_checkpoint_matches_pytorch(tmp_path):
    model = _llama(seed=1, num_key_value_heads=2, tie_word_embeddings=False)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (tmp_path / "model.safetensors").exists()
    tokens = _tokens(BASE["vocab_size"], seed=1)
    np.testing.assert_allclose(
        _jax_logits(tmp_path, tokens), _torch_logits(model, tokens), atol=1e-4, rtol=0
    )


def test_bfloat16_checkpoint_loads_exactly_into_float32(tmp_path):
    model = _llama(seed=2, num_key_value_heads=2)
    with torch.no_grad():  # bf16-representable float32 weights: the bf16 file loses nothing
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    # Converting a copy keeps the float32 reference's rotary buffer unrounded.
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        assert f.get_slice("model.layers.0.mlp.up_proj.weight").get_dtype() == "BF16"
    tokens = _tokens(BASE["vocab_size"], seed=2)
    expected = _torch_logits(model, tokens)
    np.testing.assert_allclose(_jax_logits(tmp_path, tokens), expected, atol=1e-4, rtol=0)


def test_mistral_logits_match_pytorch(tmp_path):
    config = MistralConfig(**BASE, sliding_window=None, tie_word_embeddings=False)
    config._attn_implementation = "eager"
    model = _randomise(MistralForCausalLM(config), seed=3)
    model.save_pretrained(tmp_path)
    tokens = _tokens(BASE["vocab_size"], seed=3)
    np.testing.assert_allclose(
        _jax_logits(tmp_path, tokens), _torch_logits(model, tokens), atol=1e-4, rtol=0
    )


def test_llama3_rope_scaling_is_read_from_the_checkpoint(tmp_path):
    """Without the scaling the logits would differ by far more than the parity tolerance."""
    model = _llama(**LLAMA3_ROPE)
    model.save_pretrained(tmp_path)
    loaded = load_hf_checkpoint(tmp_path)
    assert dict(loaded.model.config.rope_scaling)["factor"] == 8.0
    assert loaded.model.config.rope_theta == 500000.0
    unscaled = LanguageModel(
        type(loaded.model.config)(**{**loaded.model.config.to_dict(), "rope_scaling": None})
    )
    tokens = _tokens(BASE["vocab_size"])
    diff = np.abs(np.asarray(unscaled.logits(loaded.params, tokens)) - _torch_logits(model, tokens))
    assert diff.max() > 1e-2


def test_bfloat16_load_gives_bfloat16_params(tmp_path):
    _llama().save_pretrained(tmp_path)
    loaded = load_hf_checkpoint(tmp_path, dtype=jnp.bfloat16)
    assert loaded.params["layers"][0]["mlp"]["up_proj"]["kernel"].dtype == jnp.bfloat16
    assert loaded.params["layers"][0]["mlp"]["up_proj"]["kernel"].shape == (32, 48)
    assert loaded.model.dtype == jnp.bfloat16
    assert loaded.tokenizer is None  # the directory has no tokenizer files
