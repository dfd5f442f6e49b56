"""The embedded SmolLM2-135M: real weights, real tokenizer, checked against independent code."""

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import regex
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM as HFLlamaForCausalLM

from jaxprune.data.shakespeare import hamlet_text
from jaxprune.models.generate import greedy_generate
from jaxprune.models.loaders import load_pretrained
from jaxprune.models.loaders.embedded import embedded_gguf_path

pytestmark = pytest.mark.real_model

TEXTS = [
    "The capital of France is Paris.",
    "In 1603, 'Hamlet' was printed; it's 4,042 lines long!",
    "  indented\tcode = f(x)  # comment\n\n\nend",
    "naïve café — 東京 🙂 ½",
    "don't we'll they've I'm you're she'd it's",
]


@pytest.fixture(scope="module")
def smollm():
    return load_pretrained("smollm2-135m")


@pytest.fixture(scope="module")
def gguf_metadata():
    reader = gguf.GGUFReader(embedded_gguf_path("smollm2-135m"))
    return reader, {name: field.contents() for name, field in reader.fields.items()}


def test_greedy_continuation_of_a_fact(smollm):
    prompt = smollm.tokenizer.encode("The capital of France is")
    new = greedy_generate(smollm.model, smollm.params, prompt, max_new_tokens=4)
    assert smollm.tokenizer.decode(new).startswith(" Paris")


def test_config_is_smollm2_135m(smollm):
    c = smollm.model.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (30, 576, 1536)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (9, 3, 64)
    assert (c.vocab_size, c.rope_theta, c.rms_norm_eps) == (49152, 100000.0, 1e-5)
    assert c.tie_word_embeddings
    assert smollm.source == "smollm2-135m"


def test_decode_inverts_encode(smollm):
    tok = smollm.tokenizer
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text


def test_digits_are_split_one_by_one(smollm):
    tok = smollm.tokenizer
    assert tok.encode("2024") == [tok.encode(d)[0] for d in "2024"]
    assert len(tok.encode("x = 1234567")) == len(tok.encode("x = ")) + 7


def test_chat_special_tokens_are_single_ids(smollm):
    tok = smollm.tokenizer
    assert tok.encode("<|im_start|>user\nHi<|im_end|>")[0] == 1
    assert tok.encode("<|im_start|>user\nHi<|im_end|>")[-1] == 2
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)


# An independent byte-level BPE with SmolLM's pre-tokenisation (llama.cpp's "smollm" rule: every
# digit alone, then GPT-2's regex), written from the algorithm's description.
GPT2_WORDS = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


def _byte_to_char() -> dict[int, str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = (b for b in range(256) if b not in printable)
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def reference_encode(text: str, vocab: dict[str, int], merges: list[tuple[str, str]]) -> list[int]:
    to_char, rank = _byte_to_char(), {pair: r for r, pair in enumerate(merges)}
    ids = []
    for piece in regex.findall(r"\p{N}|[^\p{N}]+", text):
        for word in GPT2_WORDS.findall(piece):
            symbols = [to_char[b] for b in word.encode("utf-8")]
            while len(symbols) > 1:
                best = min(
                    zip(symbols, symbols[1:], strict=False), key=lambda p: rank.get(p, len(rank))
                )
                if best not in rank:
                    break
                merged, i = [], 0
                while i < len(symbols):
                    if tuple(symbols[i : i + 2]) == best:
                        merged.append(best[0] + best[1])
                        i += 2
                    else:
                        merged.append(symbols[i])
                        i += 1
                symbols = merged
            ids.extend(vocab[s] for s in symbols)
    return ids


def test_tokenizer_matches_an_independent_bpe(smollm, gguf_metadata):
    _, meta = gguf_metadata
    vocab = {t: i for i, t in enumerate(meta["tokenizer.ggml.tokens"])}
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    texts = [*TEXTS, hamlet_text()[:20000]]
    for text in texts:
        assert smollm.tokenizer.encode(text) == reference_encode(text, vocab, merges)


def test_logits_match_pytorch_llama_built_from_the_gguf(smollm, gguf_metadata):
    """PyTorch LlamaForCausalLM holding the dequantised GGUF weights, with llama.cpp's q/k row
    order undone by an explicit index map, agrees with the jaxprune model."""
    reader, meta = gguf_metadata
    heads, kv_heads = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    config = HFLlamaConfig(
        vocab_size=meta["llama.vocab_size"],
        hidden_size=meta["llama.embedding_length"],
        intermediate_size=meta["llama.feed_forward_length"],
        num_hidden_layers=meta["llama.block_count"],
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        rms_norm_eps=meta["llama.attention.layer_norm_rms_epsilon"],
        rope_theta=meta["llama.rope.freq_base"],
        tie_word_embeddings=True,
    )
    config._attn_implementation = "eager"
    names = dict(
        attn_q="self_attn.q_proj",
        attn_k="self_attn.k_proj",
        attn_v="self_attn.v_proj",
        attn_output="self_attn.o_proj",
        ffn_gate="mlp.gate_proj",
        ffn_up="mlp.up_proj",
        ffn_down="mlp.down_proj",
        attn_norm="input_layernorm",
        ffn_norm="post_attention_layernorm",
    )
    state = {}
    for t in reader.tensors:
        value = gguf.quants.dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape)))
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        else:
            _, layer, kind, _ = t.name.split(".")
            name = f"model.layers.{layer}.{names[kind]}.weight"
            if kind in ("attn_q", "attn_k"):
                n = heads if kind == "attn_q" else kv_heads
                d = value.shape[0] // n
                # GGUF row h*d + 2i + j holds Hugging Face row h*d + j*d/2 + i.
                gguf_to_hf = [
                    h * d + j * (d // 2) + i
                    for h in range(n)
                    for i in range(d // 2)
                    for j in (0, 1)
                ]
                hf = np.empty_like(value)
                hf[gguf_to_hf] = value
                value = hf
        state[name] = torch.tensor(value, dtype=torch.float32)  # a copy: GGUF data is read-only
    with torch.device("meta"):
        model = HFLlamaForCausalLM(config)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    model.model.rotary_emb = type(model.model.rotary_emb)(config)  # rebuild its off-meta buffer
    model.eval()

    tokens = np.asarray([smollm.tokenizer.encode("To be, or not to be, that is the question:")])
    with torch.no_grad():
        expected = model(torch.as_tensor(tokens)).logits.numpy()
    got = np.asarray(smollm.model.logits(smollm.params, jnp.asarray(tokens)))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert np.abs(expected).max() > 5
