"""Tiny Gemma 3 GGUF files written the way llama.cpp's converter writes them, with a small
SentencePiece-style vocabulary, and an independent SentencePiece encoder to check tokenizers
against.

llama.cpp's Gemma 3 converter keeps Hugging Face's q/k row order, stores every ``*norm.weight`` as
``1 + w``, names the four block norms ``attn_norm``, ``post_attention_norm``, ``ffn_norm`` (the
pre-MLP one) and ``post_ffw_norm``, and stores SentencePiece pieces with scores but no merges
(verified against transformers' own GGUF reader on the real Gemma-3-270M file in
``tests/models/test_gemma3_real.py``).
"""

from pathlib import Path

import gguf
import numpy as np
import torch
from gguf_header import add_hyperparameters
from tokenizers import Tokenizer as Backend
from tokenizers import models, normalizers, trainers

SPACE = "\u2581"
CONTROL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
USER_DEFINED = ["\n", "\n\n", "  ", "   ", "\t", "<b>"]
CORPUS = [
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer",
    "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles.",
    "The quick brown fox jumps over the lazy dog; the dog sleeps, the fox runs to the forest.",
]
SAMPLES = [
    "To be or not to be",
    "  the fox\n\n jumps\tover <b>the</b> dog",
    "naïve café — unseen 東京 🙂",
    "<start_of_turn>user\nhi<end_of_turn>",
    "outrageousness of the brownest foxes",
]

NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}


def sentencepiece_vocab() -> tuple[list[str], list[float], list[int]]:
    """``(pieces, scores, types)``: control, user-defined and byte pieces, then BPE pieces whose
    scores fall with their merge order (as in a SentencePiece BPE model)."""
    bpe = Backend(models.BPE())
    bpe.normalizer = normalizers.Replace(" ", SPACE)
    trainer = trainers.BpeTrainer(vocab_size=160, show_progress=False)
    bpe.train_from_iterator(CORPUS * 10, trainer)
    vocab = bpe.get_vocab()
    learned = sorted(vocab, key=vocab.get)  # alphabet first, then merges in order
    pieces = CONTROL + USER_DEFINED + [f"<0x{b:02X}>" for b in range(256)] + learned
    types = [3] * len(CONTROL) + [4] * len(USER_DEFINED) + [6] * 256 + [1] * len(learned)
    scores = [-1000.0] * (len(CONTROL) + len(USER_DEFINED)) + [0.0] * 256
    scores += [-float(i) for i in range(len(learned))]
    return pieces, scores, types


def spm_encode(text: str, pieces: list[str], scores: list[float], types: list[int]) -> list[int]:
    """SentencePiece BPE as llama.cpp runs it, written from the algorithm's description.

    Control and user-defined pieces are cut out of the raw text first (longest first); in the
    rest, spaces become ``▁`` and adjacent symbols are merged while some pair concatenates to a
    normal piece, the highest-scoring first (the leftmost on ties); symbols outside the
    vocabulary become their UTF-8 byte pieces.
    """
    ids = {p: i for i, p in reversed(list(enumerate(pieces)))}
    normal = {p: scores[i] for p, i in ids.items() if types[i] == 1}
    whole = sorted((p for p, i in ids.items() if types[i] in (3, 4)), key=len, reverse=True)
    out: list[int] = []
    rest = ""
    i = 0
    while i < len(text):
        match = next((w for w in whole if text.startswith(w, i)), None)
        if match is None:
            rest += text[i]
            i += 1
            continue
        out += _merge(rest.replace(" ", SPACE), normal, ids)
        out.append(ids[match])
        rest, i = "", i + len(match)
    return out + _merge(rest.replace(" ", SPACE), normal, ids)


def _merge(text: str, normal: dict[str, float], ids: dict[str, int]) -> list[int]:
    symbols = list(text)
    while True:
        best = None
        for k in range(len(symbols) - 1):
            score = normal.get(symbols[k] + symbols[k + 1])
            if score is not None and (best is None or score > best[0]):
                best = (score, k)
        if best is None:
            break
        k = best[1]
        symbols[k : k + 2] = [symbols[k] + symbols[k + 1]]
    out = []
    for s in symbols:
        if s in normal:
            out.append(ids[s])
        else:
            out += [ids[f"<0x{b:02X}>"] for b in s.encode()]
    return out


def write_gemma3_gguf(
    path: Path, model, *, quantise_mlp: bool = False, newer_keys: bool = False
) -> Path:
    """Writes the transformers ``Gemma3ForCausalLM`` ``model`` as llama.cpp's converter would.

    Files from the converter used for Gemma-3-270M store neither the local RoPE base nor the layer
    pattern (llama.cpp assumes 10000 and every sixth block global); ``newer_keys`` writes both
    (``rope.freq_base_swa``, ``attention.sliding_window_pattern`` as per-block flags).
    """
    c = model.config
    w = gguf.GGUFWriter(str(path), "gemma3")
    add_hyperparameters(w, c, c.rope_parameters["full_attention"]["rope_theta"], c.head_dim)
    w.add_sliding_window(c.sliding_window)
    if newer_keys:
        w.add_rope_freq_base_swa(c.rope_parameters["sliding_attention"]["rope_theta"])
        w.add_sliding_window_pattern([kind == "sliding_attention" for kind in c.layer_types])
    pieces, scores, types = sentencepiece_vocab()
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(False)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        value = tensor.float().numpy()
        if name.endswith("norm.weight"):
            value = value + 1.0
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


def gguf_name(hf_name: str) -> str:
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf_name in top:
        return top[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{NAMES[rest.removesuffix('.weight')]}.weight"


def torch_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.numpy()
