"""llama.cpp runs our GGUF exports (equal blocks as ``llama``, uneven ones as ``deci``).

Needs llama.cpp's Python binding from PyPI, installed without its pinned dependencies (they would
downgrade transformers): ``pip install --no-deps "llama-cpp-cffi==0.4.17" cffi pycparser``.
Later llama-cpp-cffi wheels (0.4.31, 0.4.42) fail to import on Debian 12: their library needs
``__cxa_call_terminate`` from GCC 14's libstdc++ (the system has GCC 12's).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from structured_models import random_params

from jaxprune.models import LanguageModel, LlamaConfig
from jaxprune.models.base import LayerWidths
from jaxprune.models.export_gguf import export_gguf
from jaxprune.models.tokenizer import Tokenizer

pytestmark = pytest.mark.slow
binding = pytest.importorskip("llama._llama_cpp_cpu")
lib, ffi = binding.lib, binding.ffi


def llama_cpp_logits(path, tokens: list[int], vocab: int) -> np.ndarray:
    """Logits at every position, one token decoded at a time (llama.cpp's own KV cache)."""
    lib.llama_backend_init()
    model = lib.llama_model_load_from_file(str(path).encode(), lib.llama_model_default_params())
    assert model != ffi.NULL, "llama.cpp refused the file"
    params = lib.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_threads, params.n_threads_batch = 64, 64, 1, 1
    ctx = lib.llama_new_context_with_model(model, params)
    rows = []
    try:
        for token in tokens:
            one = ffi.new("llama_token[]", [token])
            assert lib.llama_decode(ctx, lib.llama_batch_get_one(one, 1)) == 0
            out = lib.llama_get_logits_ith(ctx, -1)
            rows.append(np.frombuffer(ffi.buffer(out, vocab * 4), np.float32).copy())
    finally:
        lib.llama_free(ctx)
        lib.llama_model_free(model)
    return np.stack(rows)


@pytest.mark.parametrize("uneven", [False, True])
def test_llama_cpp_runs_the_export_with_our_logits(tmp_path, trained_tokenizer, uneven):
    tokenizer = Tokenizer(trained_tokenizer, None, None)
    vocab = tokenizer.vocab_size
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    if uneven:
        widths = [LayerWidths(4, 2, 96), LayerWidths(2, 1, 40), LayerWidths(4, 2, 8)]
        config = config.with_layer_widths(widths)
    model = LanguageModel(config)
    params = random_params(model)
    summary = export_gguf(tmp_path / "m.gguf", model, params, tokenizer)
    assert summary["architecture"] == ("deci" if uneven else "llama") and summary["tokenizer"]
    tokens = [int(t) for t in np.random.default_rng(0).integers(0, vocab, 12)]
    theirs = llama_cpp_logits(tmp_path / "m.gguf", tokens, vocab)
    ours = np.asarray(model.logits(params, jnp.asarray([tokens])))[0]
    assert np.abs(ours).max() > 1.0
    # llama.cpp keeps its KV cache in float16: agreement to a few 1e-3 on O(1) logits
    np.testing.assert_allclose(theirs, ours, atol=1e-2)
    np.testing.assert_array_equal(theirs.argmax(-1), ours.argmax(-1))
