"""load_pretrained: which loader reads what, and what it says about anything else."""

import numpy as np
import pytest
from llama_files import (
    logits,
    save_hf,
)

from jaxprune.models.loaders import load_pretrained


@pytest.mark.parametrize("name", ["no/such/model.gguf", "no-such-model", "no/such/dir"])
def test_missing_path_lists_accepted_forms(name):
    with pytest.raises(
        ValueError,
        match="no such file or directory.*smollm2-135m.*Hugging Face.*gguf.*jaxprune prune",
    ):
        load_pretrained(name)


def test_non_model_file_lists_accepted_forms(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="must be a .gguf file.*Hugging Face"):
        load_pretrained(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="neither config.json.*nor jaxprune_checkpoint.json"):
        load_pretrained(tmp_path)  # a directory with neither config.json nor a manifest


def test_jaxprune_checkpoint_directory_is_loaded(tmp_path, trained_tokenizer):
    from jaxprune.checkpoint import save_checkpoint
    from jaxprune.models import config_to_dict

    source = load_pretrained(save_hf(tmp_path / "hf", trained_tokenizer))
    tok_dir = source.tokenizer.save(tmp_path / "tok")
    save_checkpoint(
        tmp_path / "ckpt",
        source.params,
        config=config_to_dict(source.model.config),
        extra_files={p.name: p.read_bytes() for p in tok_dir.iterdir()},
    )
    loaded = load_pretrained(tmp_path / "ckpt")
    tokens = np.arange(24).reshape(2, 12)
    np.testing.assert_array_equal(logits(loaded, tokens), logits(source, tokens))
    assert loaded.tokenizer.encode("hello world") == source.tokenizer.encode("hello world")
    assert (loaded.tokenizer.bos_token_id, loaded.tokenizer.eos_token_id) == (1, 2)
