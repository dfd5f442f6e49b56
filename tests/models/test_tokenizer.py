"""Tokenizers: round trips through a directory, special tokens, conversion from transformers."""

import json

import pytest
from llama_files import (
    SAMPLES,
)

from jaxprune.models.tokenizer import Tokenizer


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
