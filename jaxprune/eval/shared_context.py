"""Batches for scoring continuations with each context run through the model once.

A multiple-choice example's requests share their context (lm-evaluation-harness runs it again
for every choice). :func:`batches` plans passes of ``size`` requests in which each distinct
context appears once; the model (:meth:`jaxprune.models.LanguageModel.continuation_sums`, in
:mod:`jaxprune.models.continuations`) runs the contexts through each block once, keeps their keys
and values, and runs each request's continuation after its context at its true positions, so
every log-probability is conditioned on exactly the tokens the harness conditions it on.
Contexts are padded on the right to :mod:`jaxprune.eval.zeroshot`'s lengths, continuations to a
few widths (:func:`_width`); the causal mask keeps padding from touching real positions. A model
that cannot (:func:`supported` is false: OPT, whose embedding adds learned positions, or blocks
of different shapes) is scored whole by :func:`jaxprune.eval.zeroshot.loglikelihoods`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np


def supported(model: Any, params: Any) -> bool:
    """Whether ``model`` scores continuations after shared contexts
    (:meth:`jaxprune.models.LanguageModel.shares_contexts`)."""
    return hasattr(model, "continuation_sums") and model.shares_contexts(params)


class Batch(NamedTuple):
    """One pass: ``rows`` requests over their ``contexts`` distinct contexts.

    ``context_tokens[c, :context_lengths[c]]`` is context ``c`` (padding rows have length 1);
    row ``r`` continues context ``owners[r]``: it feeds ``inputs[r]`` (its continuation but the
    last token) and scores ``targets[r, :counts[r]]`` (its continuation; padding rows score none).
    """

    rows: np.ndarray
    context_tokens: np.ndarray
    context_lengths: np.ndarray
    owners: np.ndarray
    inputs: np.ndarray
    targets: np.ndarray
    counts: np.ndarray


def _width(n: int) -> int:
    """Continuation inputs per row: ``n`` rounded up to 1, 2, 4, a multiple of 4 up to 32, of 8
    up to 64, of 16 past (0 stays 0). Continuations are short (a few tokens on ARC), so a
    coarse step would mostly pad; one block compiles per width, which is cheap."""
    if n <= 4:
        return 0 if n == 0 else power_of_two(n)
    step = 4 if n <= 32 else 8 if n <= 64 else 16
    return -(-n // step) * step


def power_of_two(n: int) -> int:
    """The least power of two at least ``n`` (1 for ``n <= 1``): padded sizes that keep the
    number of compiled shapes logarithmic."""
    return 1 << max(0, n - 1).bit_length()


def batches(
    requests: Sequence[tuple[np.ndarray, np.ndarray]],
    indices: Sequence[int],
    size: int,
    padded_length: Callable[[int], int],
) -> Iterator[Batch]:
    """Batches of ``size`` rows over ``requests[i]`` = (context ids, continuation ids), ``i`` in
    ``indices``: longest contexts first, the requests of one context next to each other.

    A batch's contexts are padded to ``padded_length(longest)`` tokens, its distinct contexts
    to a power of two (at most ``size`` of them are ever needed).
    """
    order = sorted(
        indices,
        key=lambda i: (-len(requests[i][0]), requests[i][0].tobytes(), -len(requests[i][1])),
    )
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        index: dict[bytes, int] = {}
        distinct: list[np.ndarray] = []
        owners = np.zeros(size, np.int32)
        for r, i in enumerate(rows):
            key = requests[i][0].tobytes()
            if key not in index:
                index[key] = len(distinct)
                distinct.append(requests[i][0])
            owners[r] = index[key]
        length = padded_length(max(len(c) for c in distinct))
        context_tokens = np.zeros((power_of_two(len(distinct)), length), np.int32)
        context_lengths = np.ones(len(context_tokens), np.int32)
        for c, ids in enumerate(distinct):
            context_tokens[c, : len(ids)] = ids
            context_lengths[c] = len(ids)
        width = _width(max(len(requests[i][1]) for i in rows) - 1)
        inputs = np.zeros((size, width), np.int32)
        targets = np.zeros((size, width + 1), np.int32)
        counts = np.zeros(size, np.int32)
        for r, i in enumerate(rows):
            continuation = requests[i][1]
            inputs[r, : len(continuation) - 1] = continuation[:-1]
            targets[r, : len(continuation)] = continuation
            counts[r] = len(continuation)
        yield Batch(
            np.asarray(rows), context_tokens, context_lengths, owners, inputs, targets, counts
        )


def batch_sums(model: Any, params: Any, batch: Batch) -> np.ndarray:
    """The summed continuation log-likelihood of each row of ``batch`` (padding rows: 0)."""
    return model.continuation_sums(
        params,
        batch.context_tokens,
        batch.context_lengths,
        batch.owners,
        batch.inputs,
        batch.targets,
        batch.counts,
    )


__all__ = ["Batch", "batch_sums", "batches", "supported"]
