"""GGUF files of the qwen2, qwen3 and phi3 architectures (written here from tiny transformers
models as llama.cpp's converters write them) load with transformers' logits."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from hf_families import hf_model, relative_error, tokens, torch_logits, write_gguf

import jaxprune as jp


@pytest.mark.parametrize(
    "family",
    [pytest.param("qwen2", marks=pytest.mark.slow), pytest.param("qwen3", marks=pytest.mark.slow)]
    + ["phi3"],
)
def test_gguf_round_trip_gives_transformers_logits(tmp_path, family):
    model = hf_model(family, seed=4)
    path = write_gguf(tmp_path / f"{family}.gguf", model, family)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tokenizer.*not supported")
        loaded = jp.load_pretrained(path)
    assert loaded.model.config.family == family
    ids = tokens(seed=5)
    ours = np.asarray(loaded.model.logits(loaded.params, jnp.asarray(ids)))
    assert relative_error(ours, torch_logits(model, ids)) < 1e-4
    if family == "qwen2":  # q/k/v biases travelled as GGUF .bias tensors
        bias = np.asarray(loaded.params["layers"][1]["self_attn"]["k_proj"]["bias"])
        np.testing.assert_allclose(bias, model.model.layers[1].self_attn.k_proj.bias.detach(), 0)
