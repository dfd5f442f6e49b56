"""Scoring with each context run once equals scoring every request whole, on every family."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from family_configs import FAMILY_CONFIGS
from moe_models import moe_model

import jaxprune.eval.shared_context as shared_context
from jaxprune.eval.zeroshot import _padded_length, loglikelihoods
from jaxprune.models import LanguageModel
from jaxprune.models.kv_cache import KVCache


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, params, tokens):
    return model.logits(params, tokens)


def random_model(family: str):
    if family == "mixtral":
        return moe_model(vocab_size=128)
    model = LanguageModel(FAMILY_CONFIGS[family])
    rng = np.random.default_rng(1)

    def rescale(x):  # O(1) activations: the log-likelihoods are far from uniform
        scale = 1.0 if x.ndim == 1 else 1.0 / np.sqrt(x.shape[0])
        return jnp.asarray(rng.normal(size=x.shape) * scale, x.dtype)

    return model, jax.tree.map(rescale, model.init_params(seed=0))


def random_requests(seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Contexts of 1–40 tokens with 2–5 continuations of 1–20 tokens each; one context twice."""
    rng = np.random.default_rng(seed)
    requests = []
    contexts = [rng.integers(1, 128, size=n).tolist() for n in (1, 3, 17, 40, 9, 26)]
    contexts.append(contexts[2])  # the same context in two examples
    for context in contexts:
        for _ in range(int(rng.integers(2, 6))):
            requests.append((context, rng.integers(1, 128, size=int(rng.integers(1, 21))).tolist()))
    return requests


def by_hand(model, params, context, continuation) -> float:
    """The continuation's log-likelihood from one row (right-padded to 64 tokens, which a causal
    model's earlier positions never see), log-softmax in float64."""
    tokens = np.asarray(context + continuation)
    row = np.zeros((1, 64), np.int32)
    row[0, : len(tokens) - 1] = tokens[:-1]
    logits = np.asarray(_logits(model, params, jnp.asarray(row)), np.float64)[0, : len(tokens) - 1]
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return sum(logp[t - 1, tokens[t]] for t in range(len(context), len(tokens)))


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "phi3", "gemma3", "mixtral"])
def test_shared_contexts_equal_unpadded_rows(family, monkeypatch):
    # Gemma's 4-token sliding window and LLaMA 3.1's rope scaling (original length 16) are both
    # crossed: the continuations sit at their true positions after contexts of up to 40 tokens.
    model, params = random_model(family)
    requests = random_requests()
    calls = record_shared_batches(monkeypatch)
    got = loglikelihoods(model, params, requests, batch_size=4)
    expected = [by_hand(model, params, c, k) for c, k in requests]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-4)
    assert np.std(expected) > 1.0  # not degenerate
    assert calls and sum(len(b.rows) for b in calls) == len(requests)  # all went the shared way


def test_models_without_cached_attention_are_scored_whole():
    # OPT adds learned positions in its embedding: its attention never reads the cache.
    model, params = random_model("opt")
    assert not shared_context.supported(model, params)
    requests = random_requests()[:6]
    got = loglikelihoods(model, params, requests, batch_size=4)
    expected = [by_hand(model, params, c, k) for c, k in requests]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-4)


def record_shared_batches(monkeypatch) -> list:
    calls = []
    original = shared_context.batch_sums
    monkeypatch.setattr(shared_context, "batch_sums", lambda *a: calls.append(a[2]) or original(*a))
    return calls


def test_blocks_of_different_widths_are_scored_whole(monkeypatch):
    # A structurally pruned model with uneven MLP widths: one compiled step per block shape
    # would cost more than the shared contexts save, so it runs whole.
    model, params = random_model("llama")
    mlp = params["layers"][1]["mlp"]
    narrow = {
        "gate_proj": {"kernel": mlp["gate_proj"]["kernel"][:, :40]},
        "up_proj": {"kernel": mlp["up_proj"]["kernel"][:, :40]},
        "down_proj": {"kernel": mlp["down_proj"]["kernel"][:40]},
    }
    layers = {**params["layers"], 1: {**params["layers"][1], "mlp": narrow}}
    params = {**params, "layers": layers}
    assert model.shares_contexts(random_model("llama")[1]) and not model.shares_contexts(params)
    calls = record_shared_batches(monkeypatch)
    requests = random_requests()[:8]
    got = loglikelihoods(model, params, requests)
    assert not calls
    expected = [by_hand(model, params, c, k) for c, k in requests]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-4)


def test_requests_cut_to_the_window_alone_or_without_context_are_scored_whole(monkeypatch):
    model, params = random_model("llama")
    long_context, short = list(range(5, 65)), [3, 4]
    requests = [
        (long_context, [7, 8, 9]),
        (long_context, [1]),
        ([], [5, 6, 7]),
        (short, [9]),
        (short, [1, 2]),
        ([8, 9, 10], [11]),  # a context no other request shares
    ]
    calls = record_shared_batches(monkeypatch)
    got = loglikelihoods(model, params, requests, max_length=32)
    assert [sorted(b.rows.tolist()) for b in calls] == [[3, 4]]
    window = (long_context + [7, 8, 9])[-33:]
    expected = [
        by_hand(model, params, window[:-3], window[-3:]),
        by_hand(model, params, long_context[-32:], [1]),
        by_hand(model, params, [5], [6, 7]),  # no context: the first token is not scored
        by_hand(model, params, short, [9]),
        by_hand(model, params, short, [1, 2]),
        by_hand(model, params, [8, 9, 10], [11]),
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-4)


def test_contexts_run_once_only_where_that_pads_fewer_tokens(monkeypatch):
    # PIQA's shape: a short context, long continuations. Shared: a 16-token context row and
    # 8 rows of 32 continuation inputs (272 tokens); whole: 8 rows of 32 (256).
    model, params = random_model("llama")
    rng = np.random.default_rng(2)
    requests = [([5], rng.integers(1, 128, size=30).tolist()) for _ in range(2)]
    calls = record_shared_batches(monkeypatch)
    got = loglikelihoods(model, params, requests)
    assert not calls
    expected = [by_hand(model, params, c, k) for c, k in requests]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-4)
    loglikelihoods(model, params, [([5] * 20, k) for _, k in requests])  # 20 tokens: shared
    assert calls


def test_batches_run_each_distinct_context_once():
    requests = [
        (np.asarray(c, np.int32), np.asarray(k, np.int32))
        for c, k in [
            ([1, 2, 3], [4]),
            ([9] * 20, [5, 6, 7]),
            ([1, 2, 3], [8, 9]),
            ([9] * 20, [1]),
            ([9] * 20, [2, 2]),
            ([7], [3, 3, 3, 3]),
        ]
    ]
    batches = list(shared_context.batches(requests, range(6), 4, _padded_length))
    # longest contexts first, one context's requests together (longest continuation first)
    assert [b.rows.tolist() for b in batches] == [[1, 4, 3, 2], [0, 5]]
    first, second = batches
    assert first.context_tokens.shape == (2, 32)  # two distinct contexts, padded to 32 tokens
    assert first.context_lengths.tolist() == [20, 3] and first.owners.tolist() == [0, 0, 0, 1]
    assert first.inputs.shape == (4, 2) and first.counts.tolist() == [3, 2, 1, 2]
    assert first.targets[0, :3].tolist() == [5, 6, 7] and first.inputs[0, :2].tolist() == [5, 6]
    assert second.context_tokens.shape == (2, 16) and second.counts.tolist() == [1, 4, 0, 0]
    for batch in batches:
        for r, i in enumerate(batch.rows):
            owner = batch.owners[r]
            context = batch.context_tokens[owner, : batch.context_lengths[owner]]
            np.testing.assert_array_equal(context, requests[i][0])
    one_token = list(shared_context.batches(requests, [0, 3], 4, _padded_length))
    assert one_token[0].inputs.shape == (4, 0)  # one-token continuations need no second pass


def test_a_cache_with_one_offset_per_row_writes_each_row_at_its_own():
    rng = np.random.default_rng(0)
    buffer = rng.normal(size=(3, 10, 2, 4)).astype(np.float32)
    new = rng.normal(size=(3, 4, 2, 4)).astype(np.float32)
    starts = np.asarray([0, 3, 6], np.int32)
    cache = KVCache([jnp.asarray(buffer)], [jnp.asarray(buffer)], jnp.asarray(starts), 10)
    keys, _, positions = cache.extend(jnp.asarray(new), jnp.asarray(new))
    expected = buffer.copy()
    for row, start in enumerate(starts):
        expected[row, start : start + 4] = new[row]
    np.testing.assert_array_equal(np.asarray(keys), expected)
    np.testing.assert_array_equal(positions, np.arange(10))
    np.testing.assert_array_equal(cache.query_positions(4), starts[:, None] + np.arange(4))
