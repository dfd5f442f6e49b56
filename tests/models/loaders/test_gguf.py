"""GGUF files: dequantised tensors in NumPy order, rotary rows un-permuted, logits equal torch's."""

import numpy as np
import pytest
from llama_files import (
    CORPUS,
    HIDDEN,
    INTERMEDIATE,
    LAYERS,
    SAMPLES,
    SPECIALS,
    hf_llama,
    llama_cpp_row_order,
    logits,
    torch_logits,
    write_gguf,
)

from jaxprune.models.loaders import load_pretrained
from jaxprune.models.loaders.gguf import load_gguf, unpermute_rotary_rows


@pytest.mark.parametrize("num_heads,head_dim", [(1, 2), (3, 8), (4, 16)])
def test_unpermute_rotary_rows_inverts_llama_cpp_order(num_heads, head_dim):
    weight = np.random.default_rng(0).normal(size=(num_heads * head_dim, 5))
    permuted = llama_cpp_row_order(weight, num_heads)
    if head_dim > 2:
        assert not np.array_equal(permuted, weight)
    np.testing.assert_array_equal(unpermute_rotary_rows(permuted, num_heads), weight)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_gguf_logits_match_pytorch(tmp_path, trained_tokenizer, tie):
    vocab = trained_tokenizer.get_vocab_size()
    model = hf_llama(vocab, seed=0, tie=tie)
    loaded = load_gguf(write_gguf(tmp_path / "m.gguf", model, trained_tokenizer))
    tokens = np.random.default_rng(0).integers(0, vocab, size=(2, 24))
    expected = torch_logits(model, tokens)
    assert expected.std() > 0.5
    np.testing.assert_allclose(logits(loaded, tokens), expected, atol=1e-4, rtol=0)
    assert ("lm_head" in loaded.params) is not tie


def test_gguf_config_comes_from_metadata(tmp_path, trained_tokenizer):
    vocab = trained_tokenizer.get_vocab_size()
    loaded = load_gguf(
        write_gguf(tmp_path / "m.gguf", hf_llama(vocab, 0, tie=True), trained_tokenizer)
    )
    c = loaded.model.config
    assert (c.vocab_size, c.hidden_size, c.intermediate_size) == (vocab, HIDDEN, INTERMEDIATE)
    assert (c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (2, 4, 2)
    assert (c.head_dim, c.rms_norm_eps, c.rope_theta) == (16, 1e-5, 50000.0)
    assert c.tie_word_embeddings and c.max_position_embeddings == 256
    assert (c.bos_token_id, c.eos_token_id) == (SPECIALS.index("<|im_start|>"), 2)


def test_gguf_quantised_tensors_are_dequantised_in_numpy_order(tmp_path, trained_tokenizer):
    model = hf_llama(trained_tokenizer.get_vocab_size(), seed=1, tie=True)
    loaded = load_gguf(write_gguf(tmp_path / "q.gguf", model, trained_tokenizer, quantise_mlp=True))
    for i in range(LAYERS):
        for name in ("gate_proj", "up_proj", "down_proj"):
            weight = getattr(model.model.layers[i].mlp, name).weight.detach().numpy()
            kernel = np.asarray(loaded.params["layers"][i]["mlp"][name]["kernel"])
            assert kernel.shape == weight.T.shape
            # Q8_0: blocks of 32 along the input dim, codes in [-127, 127] times one float16 scale
            # max|block|/127: half a step of rounding plus 127 codes times the scale's rounding.
            step = np.abs(weight.reshape(weight.shape[0], -1, 32)).max(-1, keepdims=True) / 127
            err = np.abs(kernel.T - weight).reshape(step.shape[:2] + (32,))
            assert (err <= (0.5 + 127 * 2.0**-11) * step + 1e-7).all()
            assert err.max() > 0  # it really went through the quantiser


def test_gguf_tokenizer_encodes_like_the_original(tmp_path, trained_tokenizer):
    vocab = trained_tokenizer.get_vocab_size()
    loaded = load_gguf(
        write_gguf(tmp_path / "m.gguf", hf_llama(vocab, 0, tie=True), trained_tokenizer)
    )
    tok = loaded.tokenizer
    assert tok.vocab_size == vocab
    for text in SAMPLES + CORPUS:
        assert tok.encode(text) == trained_tokenizer.encode(text, add_special_tokens=False).ids
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|im_end|>") == [SPECIALS.index("<|im_end|>")]
    assert tok.encode("2024") == [tok.encode(d)[0] for d in "2024"]
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)


def test_non_gguf_file_with_gguf_suffix_is_rejected(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"definitely not a gguf file" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF"):
        load_pretrained(path)


def test_gguf_of_another_architecture_is_rejected(tmp_path, trained_tokenizer):
    model = hf_llama(trained_tokenizer.get_vocab_size(), seed=0, tie=True)
    path = write_gguf(tmp_path / "m.gguf", model, trained_tokenizer, arch="gpt2")
    with pytest.raises(ValueError, match="architecture 'gpt2' is not supported"):
        load_gguf(path)
