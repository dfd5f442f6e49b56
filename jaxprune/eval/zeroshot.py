"""Zero-shot multiple-choice accuracy, scored the way lm-evaluation-harness scores it.

Each choice is a request ``(context, continuation)``; its score is the sum of the continuation
tokens' log-likelihoods given everything before them. ``acc`` picks the choice with the highest
sum, ``acc_norm`` the highest sum divided by the choice's length in characters (the harness's
``len(choice)``). Tokenisation
follows the harness: trailing whitespace of the context moves to the continuation, the pair is
encoded as one string, and the continuation is what follows the context's own tokens; a BOS
starts the context only when given (the pipeline gives it for families that expect one, Gemma,
as the harness does); a request longer than the model's window keeps its last ``max_length + 1``
tokens.

Requests are sorted by length, padded on the right to a multiple of 16 tokens (32 past 128, 64
past 256, 128 past 512; the causal mask keeps padding from touching real positions) and scored
``batch_size`` requests per forward pass under ``jit``, one compiled program per padded length.
The head (the vocabulary-wide product and log-softmax) runs only over the continuation's
positions: a pass holds ``batch_size × width × vocabulary`` float32 logits, the width being the
batch's longest continuation rounded up (a model without ``hidden_states`` and ``head`` gets the
head over every position). By default each distinct context of a batch runs through the blocks
once and its choices' continuations attend to its cached keys and values
(:mod:`jaxprune.eval.shared_context`; the harness runs the context once per choice: same
conditioning, fewer tokens) when that pads fewer tokens than running the requests whole; a
request whose context no other request shares (WinoGrande's), one cut to the window or with an
empty context, models whose attention does not read the cache and models whose blocks differ in
shape (uneven structured pruning) are scored whole, context and continuation in one row.
Examples are any objects with ``contexts``, ``continuations``, ``choices`` and ``gold``
(:class:`jaxprune.data.zeroshot.Example`).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

import jaxprune.eval.shared_context as shared_context


class MultipleChoice(Protocol):
    contexts: Sequence[str]
    continuations: Sequence[str]
    choices: Sequence[str]
    gold: int


class TaskScore(NamedTuple):
    """Accuracy on one task; ``loglikelihoods[i][j]``: example ``i``, choice ``j``."""

    acc: float
    acc_norm: float
    n: int
    loglikelihoods: list[list[float]]


def encode_pair(
    tokenizer: Any, context: str, continuation: str, bos: int | None = None
) -> tuple[list[int], list[int]]:
    """Context and continuation token ids, split as the harness splits them.

    With ``bos`` the context starts with it, as the harness's ``add_bos_token`` (its default for
    Gemma) does.
    """
    stripped = context.rstrip()
    if len(stripped) < len(context):
        continuation = context[len(stripped) :] + continuation
        context = stripped
    whole = tokenizer.encode(context + continuation)
    head = tokenizer.encode(context)
    prefix = [] if bos is None else [bos]
    return prefix + head, whole[len(head) :]


@functools.partial(jax.jit, static_argnames="model")
def _hidden(model: Any, params: Any, tokens: jax.Array) -> jax.Array:
    return model.hidden_states(params, tokens)


@functools.partial(jax.jit, static_argnames=("model", "width"))
def _sum_scored(
    model: Any,
    params: Any,
    hidden: jax.Array,
    tokens: jax.Array,
    starts: jax.Array,
    counts: jax.Array,
    width: int,
) -> jax.Array:
    """Per row ``r``, the summed log-probabilities of ``tokens[r, starts[r] + 1 + j]``, ``j <
    counts[r]``, from ``hidden[r, starts[r] + j]``: the head sees ``width`` positions a row."""
    offsets = jnp.arange(width)
    positions = jnp.minimum(starts[:, None] + offsets, hidden.shape[1] - 1)
    scored = jnp.take_along_axis(hidden, positions[..., None], axis=1)
    targets = jnp.take_along_axis(tokens, positions + 1, axis=1)
    return logprob_sums(model.head(params, scored), targets, offsets < counts[:, None])


@functools.partial(jax.jit, static_argnames="model")
def _sum_logprobs(
    model: Any, params: Any, tokens: jax.Array, starts: jax.Array, counts: jax.Array
) -> jax.Array:
    """:func:`_sum_scored` for a model with ``logits`` only: the head over every position."""
    logits = model.logits(params, tokens[:, :-1])
    offsets = jnp.arange(logits.shape[1]) - starts[:, None]
    return logprob_sums(logits, tokens[:, 1:], (offsets >= 0) & (offsets < counts[:, None]))


def logprob_sums(logits: jax.Array, targets: jax.Array, keep: jax.Array) -> jax.Array:
    """Per row, the float32 log-probabilities of ``targets`` under ``logits`` (rows, positions,
    vocabulary), summed over the positions where ``keep`` is true."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(keep, picked, 0.0), axis=1)


def loglikelihoods(
    model: Any,
    params: Any,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = False,
    share_context: bool = True,
) -> np.ndarray:
    """Summed log-likelihood of each ``(context ids, continuation ids)`` request's continuation.

    Args:
      model: a :class:`jaxprune.models.LanguageModel`, or anything with ``logits(params,
        tokens)`` (slower: the head then runs over every position).
      params: its params.
      requests: token ids; every continuation must be non-empty.
      batch_size: requests per forward pass (the last batch is padded with empty rows).
      max_length: the model's window (default ``model.config.max_position_embeddings``).
      progress: show a progress bar.
      share_context: run a context shared by several requests once per batch (where the model
        supports it); ``False`` runs every request whole, as the harness does.

    Returns:
      float64 array, one entry per request, in the given order.
    """
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_length is None:
        max_length = getattr(getattr(model, "config", None), "max_position_embeddings", 2048)
    pairs, rows = [], []
    for i, (context, continuation) in enumerate(requests):
        if not continuation:
            raise ValueError(f"request {i} has an empty continuation: nothing to score")
        pairs.append((np.asarray(context, np.int32), np.asarray(continuation, np.int32)))
        full = (list(context) + list(continuation))[-(max_length + 1) :]
        rows.append((np.asarray(full, np.int32), min(len(continuation), len(full) - 1)))
    shared = _shareable(pairs, max_length) if share_context else []
    plan = list(shared_context.batches(pairs, shared, batch_size, _padded_length))
    if shared and (
        sum(b.context_tokens.size + b.inputs.size for b in plan)
        >= sum(t.size for _, t, _, _ in _batches(_longest_first(shared, rows), rows, batch_size))
        or not shared_context.supported(model, params)
    ):  # no fewer padded tokens (short contexts, long continuations: PIQA), or not possible
        shared, plan = [], []
    whole = sorted(set(range(len(requests))) - set(shared))
    out = np.zeros(len(rows), np.float64)
    batches = [*_batches(_longest_first(whole, rows), rows, batch_size), *plan]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="zero-shot", unit="batch", leave=False)
    split = hasattr(model, "hidden_states") and hasattr(model, "head")
    for batch in batches:
        if isinstance(batch, shared_context.Batch):
            out[batch.rows] = shared_context.batch_sums(model, params, batch)[: len(batch.rows)]
            continue
        idx, tokens, starts, counts = batch
        width = min(shared_context.power_of_two(int(counts.max())), tokens.shape[1] - 1)
        tokens, starts, counts = jnp.asarray(tokens), jnp.asarray(starts), jnp.asarray(counts)
        if split:
            hidden = _hidden(model, params, tokens[:, :-1])
            sums = _sum_scored(model, params, hidden, tokens, starts, counts, width)
        else:
            sums = _sum_logprobs(model, params, tokens, starts, counts)
        out[idx] = np.asarray(sums, np.float64)[: len(idx)]
    return out


def _shareable(pairs: Sequence[tuple[np.ndarray, np.ndarray]], max_length: int) -> list[int]:
    """Requests whose context another request shares, non-empty and not cut to the window."""
    fits = [i for i, (c, k) in enumerate(pairs) if 0 < len(c) and len(c) + len(k) <= max_length + 1]
    uses = Counter(pairs[i][0].tobytes() for i in fits)
    return [i for i in fits if uses[pairs[i][0].tobytes()] > 1]


def _longest_first(indices: Sequence[int], rows: list[tuple[np.ndarray, int]]) -> list[int]:
    return sorted(indices, key=lambda i: -len(rows[i][0]))


def _padded_length(n: int) -> int:
    """``n`` rounded up to a multiple of 16 (32 past 128 tokens, 64 past 256, 128 past 512)."""
    step = 16 if n <= 128 else 32 if n <= 256 else 64 if n <= 512 else 128
    return -(-n // step) * step


def _batches(order: list[int], rows: list[tuple[np.ndarray, int]], size: int):
    """``(request indices, padded tokens, starts, counts)`` batches of ``size`` rows, one length.

    Row ``r`` scores ``counts[r]`` tokens predicted from positions ``starts[r]`` on (empty
    padding rows score none). Requests come longest first, so a batch's first request sets its
    padded length.
    """
    start = 0
    while start < len(order):
        length = _padded_length(len(rows[order[start]][0]))
        idx = order[start : start + size]
        tokens = np.zeros((size, length), np.int32)
        starts = np.zeros(size, np.int32)
        counts = np.zeros(size, np.int32)
        for r, i in enumerate(idx):
            full, n_cont = rows[i]
            tokens[r, : len(full)] = full
            starts[r], counts[r] = len(full) - 1 - n_cont, n_cont
        yield np.asarray(idx), tokens, starts, counts
        start += size


def choice_lengths(choices: Sequence[str]) -> np.ndarray:
    """What ``acc_norm`` divides by: each choice's length in characters (at least 1)."""
    return np.asarray([max(1, len(c)) for c in choices], np.float64)


def score_examples(
    model: Any,
    params: Any,
    tokenizer: Any,
    examples: Sequence[MultipleChoice],
    *,
    bos: int | None = None,
    **options: Any,
) -> TaskScore:
    """``acc`` and ``acc_norm`` of ``examples`` (options as in :func:`loglikelihoods`).

    ``bos``: a BOS id every context starts with (see :func:`encode_pair`).
    """
    if not examples:
        raise ValueError("no examples to score")
    requests, owners = [], []
    for i, ex in enumerate(examples):
        for context, continuation in zip(ex.contexts, ex.continuations, strict=True):
            requests.append(encode_pair(tokenizer, context, continuation, bos))
            owners.append(i)
    lls = loglikelihoods(model, params, requests, **options)
    per_example: list[list[float]] = [[] for _ in examples]
    for owner, value in zip(owners, lls, strict=True):
        per_example[owner].append(float(value))
    right = right_norm = 0
    for ex, scores in zip(examples, per_example, strict=True):
        lengths = choice_lengths(ex.choices)
        right += int(np.argmax(scores)) == ex.gold
        right_norm += int(np.argmax(np.asarray(scores) / lengths)) == ex.gold
    n = len(examples)
    return TaskScore(right / n, right_norm / n, n, per_example)


def score_tasks(
    model: Any,
    params: Any,
    tokenizer: Any,
    tasks: Mapping[str, tuple[Sequence[MultipleChoice], str]],
    **options: Any,
) -> dict[str, Any]:
    """Scores several tasks: ``{name: (examples, reported metric)}``.

    Returns:
      ``{"tasks": {name: {"acc", "acc_norm", "n", "metric", "score"}}, "average": mean of the
      reported metrics, "average_acc": mean of acc}`` (accuracies as fractions).
    """
    out: dict[str, Any] = {}
    for name, (examples, metric) in tasks.items():
        score = score_examples(model, params, tokenizer, examples, **options)
        value = score.acc if metric == "acc" else score.acc_norm
        out[name] = {
            "acc": score.acc,
            "acc_norm": score.acc_norm,
            "n": score.n,
            "metric": metric,
            "score": value,
        }
    return {
        "tasks": out,
        "average": float(np.mean([t["score"] for t in out.values()])),
        "average_acc": float(np.mean([t["acc"] for t in out.values()])),
    }


__all__ = [
    "TaskScore",
    "choice_lengths",
    "encode_pair",
    "loglikelihoods",
    "score_examples",
    "score_tasks",
]
