"""Tiny LLaMA checkpoints in every format the loaders read (HF safetensors, GGUF), a trained
byte-level BPE tokenizer, and logits from both sides, for the loader and tokenizer tests."""

import json
from pathlib import Path

import gguf
import jax.numpy as jnp
import numpy as np
import torch
from gguf_header import add_hyperparameters
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM as HFLlamaForCausalLM

from jaxprune.models.loaders import Pretrained

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


def hf_llama(vocab: int, seed: int, tie: bool, **extra) -> HFLlamaForCausalLM:
    """A random HF LLaMA (``extra``: more config fields, e.g. ``attention_bias=True``)."""
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
        **extra,
    )
    config._attn_implementation = "eager"
    model = HFLlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # O(1) logits, so the tolerance is meaningful
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
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


GGUF_NAMES = {
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


def gguf_name(hf_name: str) -> str:
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf_name in top:
        return top[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{GGUF_NAMES[rest.removesuffix('.weight')]}.weight"


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
    add_hyperparameters(w, c, c.rope_parameters["rope_theta"])
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
            w.add_tensor(gguf_name(name), gguf.quants.quantize(value, q8), raw_dtype=q8)
        else:
            w.add_tensor(gguf_name(name), np.ascontiguousarray(value))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def torch_logits(model: HFLlamaForCausalLM, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.numpy()


def logits(loaded: Pretrained, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(loaded.model.logits(loaded.params, jnp.asarray(tokens)))


def save_hf(tmp_path: Path, trained_tokenizer: Backend | None = None) -> Path:
    vocab = 96 if trained_tokenizer is None else trained_tokenizer.get_vocab_size()
    model = hf_llama(vocab, seed=0, tie=False)
    model.save_pretrained(tmp_path)
    if trained_tokenizer is not None:
        trained_tokenizer.save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def train_tokenizer() -> Backend:
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
