"""Greedy decoding equals the obvious loop over growing, unpadded sequences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from family_configs import FAMILY_CONFIGS

from jaxprune.models import LanguageModel, LlamaConfig
from jaxprune.models.generate import _decode, greedy_generate, reads_cache

CONFIG = LlamaConfig(
    vocab_size=50,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
)


@pytest.fixture(scope="module")
def model_and_params():
    model = LanguageModel(CONFIG)
    # Unit-variance activations (rather than the 0.02 init) so that the next token depends on the
    # whole context instead of repeating one token.
    rng = np.random.default_rng(0)

    def rescale(x):
        scale = 1.0 if x.ndim == 1 else 1.0 / np.sqrt(x.shape[0])
        return jnp.asarray(rng.normal(size=x.shape) * scale, x.dtype) + (x.ndim == 1)

    return model, jax.tree.map(rescale, model.init_params(seed=0))


def reference_greedy(model, params, prompt, steps):
    logits_fn = jax.jit(model.logits)  # recompiles for every length: no padding involved
    tokens = list(prompt)
    for _ in range(steps):
        logits = logits_fn(params, jnp.asarray([tokens]))[0, -1]
        tokens.append(int(np.argmax(np.asarray(logits))))
    return tokens[len(prompt) :]


@pytest.mark.parametrize("prompt", [[3], [7, 1, 4, 1, 5, 9, 2, 6]])
def test_greedy_matches_unpadded_reference(model_and_params, prompt):
    model, params = model_and_params
    expected = reference_greedy(model, params, prompt, 10)
    assert len(set(expected)) > 1  # not a degenerate repeat of one token
    assert reads_cache(model, params)  # one token per step through the blocks, keys cached
    assert greedy_generate(model, params, prompt, 10) == expected


def test_generation_stops_after_eos(model_and_params):
    model, params = model_and_params
    full = reference_greedy(model, params, [5, 6], 10)
    eos = full[3]
    stop = full.index(eos)
    assert greedy_generate(model, params, [5, 6], 10, eos_token_id=eos) == full[: stop + 1]


def test_one_compilation_serves_every_step_and_prompt_length(model_and_params):
    model, params = model_and_params
    before = _decode._cache_size()
    greedy_generate(model, params, [1, 2, 3], 5)
    greedy_generate(model, params, [1, 2, 3, 4, 5, 6], 7)  # same padded length (32)
    assert _decode._cache_size() - before <= 1


def test_zero_new_tokens_and_bad_arguments(model_and_params):
    model, params = model_and_params
    assert greedy_generate(model, params, [1, 2], 0) == []
    with pytest.raises(ValueError, match="at least one prompt token"):
        greedy_generate(model, params, [], 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_generate(model, params, [1], -1)


@pytest.mark.parametrize("family", ["gemma3", "opt"])
def test_cached_generation_equals_uncached_greedy_on_other_families(family):
    """Gemma 3 reads the cache in its own (sliding-window) attention; OPT, whose embedding adds
    learned positions, decodes without it. Both equal the unpadded, uncached loop."""
    model = LanguageModel(FAMILY_CONFIGS[family])
    rng = np.random.default_rng(1)

    def rescale(x):
        scale = 1.0 if x.ndim == 1 else 1.0 / np.sqrt(x.shape[0])
        return jnp.asarray(rng.normal(size=x.shape) * scale, x.dtype)

    params = jax.tree.map(rescale, model.init_params(seed=0))
    prompt = [7, 1, 4, 1, 5, 9]
    expected = reference_greedy(model, params, prompt, 12)
    assert len(set(expected)) > 1
    assert reads_cache(model, params) == (family == "gemma3")
    assert greedy_generate(model, params, prompt, 12) == expected
