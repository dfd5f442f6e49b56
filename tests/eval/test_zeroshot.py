"""Zero-shot scoring equals a hand-computed log-likelihood choice; harness tokenisation rules."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_models import TINY_LLAMA

from jaxprune.data.zeroshot import Example
from jaxprune.eval.zeroshot import (
    choice_lengths,
    encode_pair,
    loglikelihoods,
    score_examples,
    score_tasks,
)
from jaxprune.models import LanguageModel, LlamaConfig
from jaxprune.models.tokenizer import Tokenizer

EXAMPLES = [
    Example(("Question: is the sky blue?\nAnswer:",) * 2, (" no", " yes"), 1, ("no", "yes")),
    Example(
        ("To be, or not to be, that is",) * 3,
        (" the question", " a fox", " whether 'tis nobler in the mind"),
        0,
        ("the question", "a fox", "whether 'tis nobler in the mind"),
    ),
    Example(  # winogrande's form: contexts differ, the continuation is shared
        (
            "The fox jumped over the dog because the fox",
            "The fox jumped over the dog because the dog",
        ),
        (" was quick.", " was quick."),
        0,
        (
            "The fox jumped over the dog because the fox",
            "The fox jumped over the dog because the dog",
        ),
    ),
]


@pytest.fixture(scope="module")
def setup(trained_tokenizer):
    tokenizer = Tokenizer(trained_tokenizer)
    config = LlamaConfig(**{**TINY_LLAMA.to_dict(), "vocab_size": tokenizer.vocab_size})
    model = LanguageModel(config)
    params = model.init_params(0)
    params = {**params, "embed_tokens": {"embedding": params["embed_tokens"]["embedding"] * 60}}
    return model, params, tokenizer


def by_hand(model, params, tokenizer, context, continuation):
    """Log-likelihood of the continuation from one unpadded forward, log-softmax in float64."""
    head = tokenizer.encode(context.rstrip())
    whole = tokenizer.encode(context + continuation)
    tokens = np.asarray(whole)
    forward = jax.jit(model.logits)  # compiled per length: eager dispatch compiles every op
    logits = np.asarray(forward(params, jnp.asarray(tokens[None, :-1])), np.float64)[0]
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return sum(logp[t - 1, tokens[t]] for t in range(len(head), len(tokens)))


def test_scores_equal_hand_computed_loglikelihoods_and_choices(setup):
    model, params, tokenizer = setup
    score = score_examples(model, params, tokenizer, EXAMPLES, batch_size=4)
    right = right_norm = 0
    for ex, got in zip(EXAMPLES, score.loglikelihoods, strict=True):
        expected = [
            by_hand(model, params, tokenizer, c, k)
            for c, k in zip(ex.contexts, ex.continuations, strict=True)
        ]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
        lengths = [len(c) for c in ex.choices]
        right += int(np.argmax(expected)) == ex.gold
        right_norm += int(np.argmax(np.asarray(expected) / lengths)) == ex.gold
    assert score.acc == right / 3 and score.acc_norm == right_norm / 3
    assert len({round(v, 3) for lls in score.loglikelihoods for v in lls}) > 4  # not degenerate


def test_batching_and_padding_do_not_change_scores(setup):
    model, params, tokenizer = setup
    one = score_examples(model, params, tokenizer, EXAMPLES, batch_size=1)
    many = score_examples(model, params, tokenizer, EXAMPLES, batch_size=16)
    np.testing.assert_allclose(sum(one.loglikelihoods, []), sum(many.loglikelihoods, []), atol=1e-4)


def test_trailing_context_space_moves_to_the_continuation(trained_tokenizer):
    tokenizer = Tokenizer(trained_tokenizer)
    head, tail = encode_pair(tokenizer, "Answer: ", "yes")
    assert head == tokenizer.encode("Answer:")
    assert head + tail == tokenizer.encode("Answer: yes")


def test_a_continuation_filling_the_row_is_scored_whole(setup):
    # the head's width (a power of two) is capped at the row: every token still counts
    model, params, tokenizer = setup
    context, continuation = "To", " be, or not to be, that is the question: whether"
    head, tail = encode_pair(tokenizer, context, continuation)
    assert len(tail) > 8 * len(head) and len(head + tail) not in (16, 32)
    (got,) = loglikelihoods(model, params, [(head, tail)])
    np.testing.assert_allclose(
        got, by_hand(model, params, tokenizer, context, continuation), rtol=1e-5, atol=1e-4
    )


def test_padded_lengths_and_head_widths():
    from jaxprune.eval.shared_context import power_of_two
    from jaxprune.eval.zeroshot import _padded_length

    assert [_padded_length(n) for n in (1, 16, 17, 129, 257, 513, 779)] == [
        16, 16, 32, 160, 320, 640, 896,
    ]  # fmt: skip
    assert all(n <= _padded_length(n) < n + 128 for n in range(1, 2000))
    assert [power_of_two(n) for n in (0, 1, 2, 3, 8, 9)] == [1, 1, 2, 4, 8, 16]


def test_logprob_sums_against_numpy():
    """bfloat16 logits are summed in float32, only where ``keep`` holds (float64 reference)."""
    from jaxprune.eval.zeroshot import logprob_sums

    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 5, 11)) * 4, jnp.bfloat16)
    targets = rng.integers(0, 11, size=(3, 5))
    keep = rng.random((3, 5)) < 0.6
    keep[:, 0] = True
    z = np.asarray(logits.astype(jnp.float32), np.float64)
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    want = np.where(keep, picked, 0.0).sum(1)
    got = logprob_sums(logits, jnp.asarray(targets), jnp.asarray(keep))
    assert got.dtype == jnp.float32 and keep.any(axis=1).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_long_requests_keep_their_last_tokens(setup):
    model, params, _ = setup
    context, continuation = list(range(5, 45)), [7, 8, 9]
    short = loglikelihoods(model, params, [(context, continuation)], max_length=16)
    tail = loglikelihoods(model, params, [(context[-14:], continuation)])
    np.testing.assert_allclose(short, tail, atol=1e-5)


def test_task_report_averages_the_reported_metric(setup):
    model, params, tokenizer = setup
    report = score_tasks(
        model, params, tokenizer, {"a": (EXAMPLES, "acc"), "b": (EXAMPLES, "acc_norm")}
    )
    a, b = report["tasks"]["a"], report["tasks"]["b"]
    assert report["average"] == pytest.approx((a["acc"] + b["acc_norm"]) / 2)
    assert report["average_acc"] == pytest.approx(a["acc"])


def test_empty_inputs_are_errors(setup):
    model, params, tokenizer = setup
    with pytest.raises(ValueError, match="no examples"):
        score_examples(model, params, tokenizer, [])
    with pytest.raises(ValueError, match="empty continuation"):
        loglikelihoods(model, params, [([1, 2], [])])


def test_acc_norm_divides_by_characters_as_the_harness():
    # lm-evaluation-harness normalises by len(choice) in characters, not UTF-8 bytes.
    assert choice_lengths(["café", "ab", ""]).tolist() == [4, 2, 1]


@dataclasses.dataclass(frozen=True)
class LogitsOnly:
    """A model with ``logits`` only, recording the shapes of the token batches it is given."""

    model: LanguageModel

    def logits(self, params, tokens):
        SEEN.append(("logits", tokens.shape))
        return self.model.logits(params, tokens)


@dataclasses.dataclass(frozen=True)
class SplitRecorder(LogitsOnly):
    """A model with ``hidden_states`` and ``head`` too, recording what each is given."""

    def hidden_states(self, params, tokens):
        SEEN.append(("blocks", tokens.shape))
        return self.model.hidden_states(params, tokens)

    def head(self, params, hidden):
        SEEN.append(("head", hidden.shape))
        return self.model.head(params, hidden)


SEEN: list[tuple[str, tuple[int, ...]]] = []


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("wrapper", [LogitsOnly, SplitRecorder])
def test_batch_size_is_the_number_of_requests_per_forward_pass(setup, batch_size, wrapper):
    model, params, tokenizer = setup
    SEEN.clear()
    score = score_examples(wrapper(model), params, tokenizer, EXAMPLES, batch_size=batch_size)
    assert SEEN and all(shape[0] == batch_size for _, shape in SEEN)
    if wrapper is SplitRecorder:  # the head sees the continuations only, the blocks every token
        assert {what for what, _ in SEEN} == {"blocks", "head"}
        longest = max(
            len(encode_pair(tokenizer, c, k)[1])
            for ex in EXAMPLES
            for c, k in zip(ex.contexts, ex.continuations, strict=True)
        )
        widths = [shape[1] for what, shape in SEEN if what == "head"]
        lengths = [shape[1] for what, shape in SEEN if what == "blocks"]
        assert max(widths) < 2 * longest and max(widths) < max(lengths)
    else:
        assert {what for what, _ in SEEN} == {"logits"}
    reference = score_examples(model, params, tokenizer, EXAMPLES, batch_size=8)
    np.testing.assert_allclose(
        sum(score.loglikelihoods, []), sum(reference.loglikelihoods, []), atol=1e-4
    )
