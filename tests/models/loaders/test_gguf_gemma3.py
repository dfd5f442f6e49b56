"""Gemma 3 GGUF files: norms stored as 1 + w, no rotary row permutation, the layer pattern and
both RoPE bases, and a SentencePiece tokenizer rebuilt from scores (no merges in the file)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from gemma_files import (
    SAMPLES,
    sentencepiece_vocab,
    spm_encode,
    torch_logits,
    write_gemma3_gguf,
)
from transformers import Gemma3ForCausalLM as HFGemma3ForCausalLM
from transformers import Gemma3TextConfig

from jaxprune.models.loaders import load_pretrained
from jaxprune.models.loaders.gguf import load_gguf
from jaxprune.models.loaders.gguf_tokenizer import sentencepiece_merges

SEQ = 24  # three sliding windows


def hf_gemma3(vocab: int, seed: int = 0, **overrides) -> HFGemma3ForCausalLM:
    """Six blocks, so that the default pattern (every sixth global) has a global block."""
    base = dict(
        vocab_size=vocab,
        hidden_size=64,  # Q8_0 blocks of 32 along the inputs
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=8,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 500.0},
        },
    )
    config = Gemma3TextConfig(**{**base, **overrides})
    config._attn_implementation = "eager"
    model = HFGemma3ForCausalLM(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(0.3 * noise if name.endswith("norm.weight") else noise / p.shape[1] ** 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def vocab_size() -> int:
    return len(sentencepiece_vocab()[0])


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_gemma3_gguf_logits_match_pytorch(tmp_path, vocab_size, tie):
    model = hf_gemma3(vocab_size, tie_word_embeddings=tie)
    loaded = load_pretrained(write_gemma3_gguf(tmp_path / "g.gguf", model))
    assert loaded.model.config.family == "gemma3"
    assert loaded.model.config.layer_types[5] == "full_attention"
    tokens = np.random.default_rng(0).integers(0, vocab_size, size=(2, SEQ))
    expected = torch_logits(model, tokens)
    assert expected.std() > 0.5
    got = np.asarray(loaded.model.logits(loaded.params, jnp.asarray(tokens)))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    # (w + 1) - 1 in float32: exact up to one ulp of 1.
    norm = loaded.params["layers"][0]["self_attn"]["q_norm"]["scale"]
    expected_norm = model.model.layers[0].self_attn.q_norm.weight.detach().numpy()
    np.testing.assert_allclose(norm, expected_norm, atol=2**-23, rtol=0)


def test_newer_gemma3_keys_give_the_local_base_and_the_pattern(tmp_path, vocab_size):
    layer_types = ["sliding_attention", "full_attention"] * 3
    model = hf_gemma3(
        vocab_size,
        seed=1,
        layer_types=layer_types,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 50.0},
            "full_attention": {"rope_type": "default", "rope_theta": 500.0},
        },
    )
    path = write_gemma3_gguf(tmp_path / "g.gguf", model, newer_keys=True, quantise_mlp=True)
    loaded = load_gguf(path)
    c = loaded.model.config
    assert c.layer_types == tuple(layer_types)
    assert (c.rope_theta, c.rope_local_base_freq) == (500.0, 50.0)
    tokens = np.random.default_rng(1).integers(0, vocab_size, size=(2, SEQ))
    got = np.asarray(loaded.model.logits(loaded.params, jnp.asarray(tokens)))
    # The MLP went through Q8_0, so compare with the dequantised MLP in the torch model.
    with torch.no_grad():
        for i in range(6):
            for name in ("gate_proj", "up_proj", "down_proj"):
                kernel = loaded.params["layers"][i]["mlp"][name]["kernel"]
                weight = getattr(model.model.layers[i].mlp, name).weight
                assert 0 < np.abs(np.asarray(kernel).T - weight.numpy()).max() < 0.05
                weight.copy_(torch.as_tensor(np.array(kernel).T))
    np.testing.assert_allclose(got, torch_logits(model, tokens), atol=1e-4, rtol=0)


def test_sentencepiece_tokenizer_encodes_like_sentencepiece(tmp_path, vocab_size):
    loaded = load_gguf(write_gemma3_gguf(tmp_path / "g.gguf", hf_gemma3(vocab_size)))
    tok = loaded.tokenizer
    pieces, scores, types = sentencepiece_vocab()
    assert tok.vocab_size == vocab_size
    assert (tok.bos_token_id, tok.eos_token_id) == (2, 1)
    for text in SAMPLES:
        ids = tok.encode(text)
        assert ids == spm_encode(text, pieces, scores, types), text
        assert tok.decode(ids) == text
    assert tok.encode("<start_of_turn>") == [pieces.index("<start_of_turn>")]
    assert tok.encode("\n\n") == [pieces.index("\n\n")]  # user-defined pieces stay whole
    assert tok.encode("東") == [pieces.index(f"<0x{b:02X}>") for b in "東".encode()]


def test_sentencepiece_merges_rank_every_split_by_the_merged_score():
    pieces = ["a", "b", "c", "ab", "bc", "abc", "<x>"]
    scores = [0.0, 0.0, 0.0, -2.0, -1.0, -0.5, 0.0]
    types = [1, 1, 1, 1, 1, 1, 3]
    # "abc" (score -0.5) splits as a+bc and ab+c; then "bc" (-1), then "ab" (-2).
    assert sentencepiece_merges(pieces, scores, types) == [
        ("a", "bc"),
        ("ab", "c"),
        ("b", "c"),
        ("a", "b"),
    ]
