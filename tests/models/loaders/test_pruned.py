"""Pruned models as checkpoints: save_pruned / load_pruned give back a runnable model."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pruned_trees import tiny_llama, typed_leaves
from tiny_models import TINY_LLAMA

from jaxprune.checkpoint import save_checkpoint
from jaxprune.models import LanguageModel, config_to_dict
from jaxprune.models.loaders import load_pruned

CFG = TINY_LLAMA


def tiny_tokenizer():
    import tokenizers

    from jaxprune.models.tokenizer import Tokenizer

    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, "to": 3, "be": 4, "or": 5, "not": 6}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return Tokenizer(backend, bos_token_id=0, eos_token_id=1)


def tokenizer_files(tokenizer, tmp_path: Path) -> dict[str, bytes]:
    directory = tokenizer.save(tmp_path / "tokenizer")
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_a_model_checkpoint_loads_as_a_runnable_model_with_its_tokenizer(tmp_path):
    from jaxprune.models.loaders import load_pretrained

    model, params, masks = tiny_llama()
    tokenizer = tiny_tokenizer()
    save_checkpoint(
        tmp_path / "c",
        params,
        masks=masks,
        config=config_to_dict(CFG),
        extra_files=tokenizer_files(tokenizer, tmp_path),
        compact=True,
    )
    for pre in (load_pruned(tmp_path / "c"), load_pretrained(tmp_path / "c")):
        assert pre.model == model and pre.source == str(tmp_path / "c")
        assert typed_leaves(pre.params) == typed_leaves(params)
        assert pre.tokenizer.encode("to be or not to be") == [3, 4, 5, 6, 3, 4]
        assert (pre.tokenizer.bos_token_id, pre.tokenizer.eos_token_id) == (0, 1)
        tokens = jnp.asarray([pre.tokenizer.encode("not to be")])
        np.testing.assert_array_equal(
            pre.model.logits(pre.params, tokens), model.logits(params, tokens)
        )


def test_a_bfloat16_model_checkpoint_computes_in_bfloat16_and_may_lack_a_tokenizer(tmp_path):
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), LanguageModel(CFG).init_params(0))
    save_checkpoint(tmp_path / "c", params, config=config_to_dict(CFG))
    pre = load_pruned(tmp_path / "c")
    assert pre.tokenizer is None
    assert pre.model == LanguageModel(CFG, dtype=jnp.bfloat16)
    assert pre.params["norm"]["scale"].dtype == jnp.bfloat16


def test_a_checkpoint_without_a_model_config_is_not_a_model(tmp_path):
    save_checkpoint(tmp_path / "c", {"w": jnp.ones(2)}, config={"family": "toy"})
    with pytest.raises(ValueError, match="no usable model config.*config_to_dict"):
        load_pruned(tmp_path / "c")
