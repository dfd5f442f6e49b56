"""Perplexity against an independent NumPy computation and a closed form."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxprune.eval import perplexity
from jaxprune.models import LanguageModel, LlamaConfig

CONFIG = LlamaConfig(
    vocab_size=61,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
)
MODEL = LanguageModel(CONFIG)


@pytest.fixture(scope="module")
def params():
    return MODEL.init_params(0)


@pytest.fixture(scope="module")
def windows():
    return np.random.default_rng(0).integers(0, CONFIG.vocab_size, size=(7, 12)).astype(np.int32)


def numpy_perplexity(params, windows) -> float:
    logits = np.asarray(MODEL.logits(params, windows), np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(logp[:, :-1], windows[:, 1:, None], axis=-1)
    return float(np.exp(-picked.mean()))


def test_matches_numpy_log_softmax(params, windows):
    got = perplexity(MODEL, params, windows, batch_size=3)
    assert got.ppl == pytest.approx(numpy_perplexity(params, windows), rel=1e-5)
    assert got.tokens == 7 * 11
    assert got.nll == pytest.approx(np.log(got.ppl))


def test_batch_size_does_not_change_the_result(params, windows):
    ppls = [perplexity(MODEL, params, windows, batch_size=b).ppl for b in (1, 3, 7, 16)]
    np.testing.assert_allclose(ppls, ppls[0], rtol=1e-6)


def test_uniform_predictions_give_the_vocabulary_size(params, windows):
    flat = jax.tree.map(lambda x: x * 0, params)  # zero embeddings and norms: all logits equal
    assert perplexity(MODEL, flat, windows).ppl == pytest.approx(CONFIG.vocab_size, rel=1e-5)


def test_non_finite_params_are_an_error_not_a_nan(params, windows):
    broken = jax.tree.map(lambda x: x * np.nan, params)
    with pytest.raises(FloatingPointError, match="not finite"):
        perplexity(MODEL, broken, windows)


def test_progress_bar_does_not_change_the_result(params, windows):
    quiet = perplexity(MODEL, params, windows, batch_size=4)
    assert perplexity(MODEL, params, windows, batch_size=4, progress=True) == quiet


def test_token_ids_outside_the_vocabulary_are_refused(params, windows):
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        perplexity(MODEL, params, windows + CONFIG.vocab_size)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        perplexity(MODEL, params, windows - CONFIG.vocab_size)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((0, 5), np.int32), np.zeros((3,), np.int32), np.zeros((2, 5), np.float32)],
)
def test_bad_windows_are_refused(params, bad):
    with pytest.raises(ValueError, match="windows"):
        perplexity(MODEL, params, bad)
