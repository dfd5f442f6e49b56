"""GGUF export: per-layer widths written as arrays, read back by our GGUF loader bit for bit."""

from __future__ import annotations

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from structured_models import TINY_GQA, random_params, windows

from jaxprune.models import LanguageModel
from jaxprune.models.base import LayerWidths
from jaxprune.models.export_gguf import export_gguf, permute_rotary_rows
from jaxprune.models.loaders import load_pretrained
from jaxprune.models.loaders.gguf import unpermute_rotary_rows

UNEVEN = TINY_GQA.with_layer_widths(
    [LayerWidths(6, 3, 40), LayerWidths(2, 1, 17), LayerWidths(4, 2, 8)]
).with_output_biases()


def assert_same_params(again, params):
    pairs = zip(jax.tree.leaves(again), jax.tree.leaves(params), strict=True)
    assert jax.tree.structure(again) == jax.tree.structure(params)
    for a, b in pairs:
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))


@pytest.mark.parametrize("dtype", ["float32", pytest.param("bfloat16", marks=pytest.mark.slow)])
def test_uneven_widths_round_trip_bit_for_bit(tmp_path, dtype):
    model = LanguageModel(UNEVEN, dtype=dtype)
    params = jax.tree.map(lambda x: x.astype(dtype), random_params(LanguageModel(UNEVEN)))
    summary = export_gguf(tmp_path / "m.gguf", model, params)
    assert summary["architecture"] == "deci" and summary["per_layer"]
    fields = gguf.GGUFReader(tmp_path / "m.gguf").fields
    assert fields["deci.feed_forward_length"].contents() == [40, 17, 8]
    assert fields["deci.attention.head_count"].contents() == [6, 2, 4]
    assert fields["deci.attention.head_count_kv"].contents() == [3, 1, 2]
    again = load_pretrained(tmp_path / "m.gguf", dtype=dtype)
    assert again.model.config.layer_widths(1) == LayerWidths(2, 1, 17)
    assert again.model.config.attention_bias and again.model.config.mlp_bias
    assert_same_params(again.params, params)
    tokens = windows(n=2)
    np.testing.assert_array_equal(
        again.model.logits(again.params, jnp.asarray(tokens)),
        model.logits(params, jnp.asarray(tokens)),
    )


def test_uniform_models_are_plain_llama_files(tmp_path):
    model = LanguageModel(TINY_GQA)
    params = random_params(model)
    summary = export_gguf(tmp_path / "m.gguf", model, params)
    fields = gguf.GGUFReader(tmp_path / "m.gguf").fields
    assert summary["architecture"] == "llama" and not summary["per_layer"]
    assert fields["llama.feed_forward_length"].contents() == 40
    assert_same_params(load_pretrained(tmp_path / "m.gguf").params, params)


def test_rotary_row_orders_are_inverse_and_match_llama_cpp_for_biases():
    w = np.arange(24 * 3, dtype=np.float32).reshape(24, 3)
    np.testing.assert_array_equal(unpermute_rotary_rows(permute_rotary_rows(w, 3), 3), w)
    bias = np.arange(8, dtype=np.float32)  # one head of 8: GGUF rows 0..7 = HF 0,4,1,5,2,6,3,7
    np.testing.assert_array_equal(permute_rotary_rows(bias, 1), [0, 4, 1, 5, 2, 6, 3, 7])


def test_existing_files_and_other_families_are_refused(tmp_path):
    from structured_models import TINY_OPT

    (tmp_path / "m.gguf").write_text("x")
    model = LanguageModel(TINY_GQA)
    with pytest.raises(ValueError, match="exists"):
        export_gguf(tmp_path / "m.gguf", model, model.init_params(0))
    opt = LanguageModel(TINY_OPT)
    with pytest.raises(ValueError, match="supports the llama family"):
        export_gguf(tmp_path / "o.gguf", opt, opt.init_params(0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
