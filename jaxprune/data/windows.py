"""Cutting a token stream into windows: pure functions of the stream and a seed."""

from __future__ import annotations

import warnings

import numpy as np


def random_windows(
    tokens: np.ndarray, nsamples: int, seqlen: int, rng: np.random.Generator, name: str = "text"
) -> np.ndarray:
    """``nsamples`` windows of ``seqlen`` tokens starting at uniform random offsets."""
    if tokens.size < seqlen:
        raise ValueError(
            f"{name} has {tokens.size} tokens, fewer than one window of {seqlen}; "
            "use a shorter seqlen or more text"
        )
    if nsamples * seqlen > tokens.size:
        warnings.warn(
            f"{name} has {tokens.size} tokens but {nsamples} windows of {seqlen} ask for "
            f"{nsamples * seqlen}: the calibration windows overlap (each token is seen "
            f"{nsamples * seqlen / tokens.size:.1f}× on average); use fewer or shorter windows, "
            "or more text",
            UserWarning,
            stacklevel=3,
        )
    starts = rng.integers(0, tokens.size - seqlen + 1, size=nsamples)
    return np.stack([tokens[s : s + seqlen] for s in starts]).astype(np.int32)


def prepend_bos(windows: np.ndarray, bos: int) -> np.ndarray:
    """Each window as ``bos`` followed by its first ``seqlen - 1`` tokens.

    The shape stays ``(n, seqlen)`` and every window still scores ``seqlen - 1`` predicted tokens,
    so perplexities with and without BOS average over the same number of tokens (the first text
    token becomes a prediction from BOS, the last one is dropped).
    """
    column = np.full((windows.shape[0], 1), bos, windows.dtype)
    return np.concatenate([column, windows[:, :-1]], axis=1)


def consecutive_windows(
    tokens: np.ndarray, nsamples: int | None, seqlen: int, name: str = "text"
) -> np.ndarray:
    """The first ``nsamples`` non-overlapping windows (all complete ones if ``None``)."""
    fit = tokens.size // seqlen
    if fit == 0 or (nsamples is not None and nsamples > fit):
        raise ValueError(
            f"{name} holds {tokens.size} tokens: {fit} windows of {seqlen} fit, "
            f"{nsamples} were asked for; lower nsamples or seqlen"
        )
    count = fit if nsamples is None else nsamples
    return tokens[: count * seqlen].reshape(count, seqlen).astype(np.int32)
