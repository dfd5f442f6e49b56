"""Calibration and evaluation token windows.

:func:`load_windows` turns a corpus into an int32 array ``(nsamples, seqlen)``:

- ``split="calib"``: windows at random starts (seeded), as the SparseGPT/Wanda calibration protocol
  draws them;
- ``split="eval"``: consecutive non-overlapping windows from the start of the text (perplexity).

Corpora (:data:`KNOWN_SOURCES`): the offline Shakespeare protocol (``shakespeare-calib`` is always
random windows from every play but Hamlet, ``shakespeare-hamlet`` always consecutive windows of
Hamlet); the hub corpora ``wikitext2``, ``c4`` and ``ptb`` in the standard protocols (needs
``datasets`` and a hub); or any text file / directory of ``*.txt`` files. The same arguments always
give the same tokens.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from jaxprune.data import hub, shakespeare
from jaxprune.data.tokens import token_stream
from jaxprune.data.windows import consecutive_windows, prepend_bos, random_windows

# Calibration windows of uniformly random token ids (no text, no tokenizer): what a model without
# a tokenizer can be pruned with, as the accelerator benchmark does.
RANDOM = "random"

KNOWN_SOURCES: dict[str, str] = {
    RANDOM: "seeded random token ids within the vocabulary (calibration only; no tokenizer)",
    shakespeare.CALIB: "random windows from Shakespeare's plays except Hamlet (offline)",
    shakespeare.HAMLET: "consecutive windows of Hamlet from its start (offline)",
    **hub.DESCRIPTIONS,
}

Split = Literal["calib", "eval"]

__all__ = [
    "KNOWN_SOURCES",
    "RANDOM",
    "check_source",
    "load_text",
    "load_windows",
    "random_token_windows",
]


def random_token_windows(vocab_size: int, nsamples: int, seqlen: int, seed: int = 0) -> np.ndarray:
    """``(nsamples, seqlen)`` int32 token ids drawn uniformly from ``[0, vocab_size)``, seeded."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.random.default_rng(seed).integers(0, vocab_size, (nsamples, seqlen), dtype=np.int32)


def load_text(source: str | os.PathLike, split: Split = "calib") -> str:
    """The raw text behind ``source`` for ``split`` (see :func:`load_windows`)."""
    name = os.fspath(source)
    if name == shakespeare.CALIB:
        return shakespeare.calibration_text()
    if name == shakespeare.HAMLET:
        return shakespeare.hamlet_text()
    if name in hub.DESCRIPTIONS:
        return hub.load_text(name, split)
    return _local_text(Path(name))


def load_windows(
    source: str | os.PathLike,
    tokenizer,
    *,
    nsamples: int | None,
    seqlen: int,
    seed: int = 0,
    split: Split = "calib",
    vocab_size: int | None = None,
    bos: int | None = None,
) -> np.ndarray:
    """Token windows of ``source`` for calibration or evaluation.

    Args:
      source: a name in :data:`KNOWN_SOURCES`, a ``.txt`` file or a directory of ``*.txt`` files
        (sorted by name and joined with blank lines).
      tokenizer: a :class:`jaxprune.models.tokenizer.Tokenizer` (``encode(text) -> ids``).
      nsamples: number of windows; with ``split="eval"``, ``None`` takes every complete window.
      seqlen: tokens per window.
      seed: seed of the random window starts (``calib``).
      split: ``"calib"`` (random windows, training split of hub corpora) or ``"eval"``
        (consecutive windows, test split). The two Shakespeare names fix their own split.
      vocab_size: the model's vocabulary, for ``source="random"`` (random token ids, no text:
        ``tokenizer`` may be ``None``; calibration only).
      bos: a BOS id to start every window with (then its first ``seqlen - 1`` text tokens, see
        :func:`jaxprune.data.windows.prepend_bos`); ``Pretrained.bos_token()`` gives the model's.

    Returns:
      int32 array ``(nsamples, seqlen)``.

    Raises:
      ValueError: unknown source, unreadable or empty path, bad counts, or a text too short.
    """
    if split not in ("calib", "eval"):
        raise ValueError(f"split must be 'calib' or 'eval', got {split!r}")
    if not isinstance(seqlen, int | np.integer) or seqlen <= 0:
        raise ValueError(f"seqlen must be a positive integer, got {seqlen!r}")
    if nsamples is not None and (not isinstance(nsamples, int | np.integer) or nsamples <= 0):
        raise ValueError(
            f"nsamples must be a positive integer (or None for eval), got {nsamples!r}"
        )
    name = os.fspath(source)
    if name == RANDOM:
        if split != "calib" or nsamples is None or vocab_size is None:
            raise ValueError(
                "random token windows are for calibration only (pass nsamples and the model's "
                "vocab_size); evaluate on text"
            )
        return random_token_windows(vocab_size, nsamples, seqlen, seed)
    if name == shakespeare.CALIB:
        split = "calib"
    elif name == shakespeare.HAMLET:
        split = "eval"
    elif name not in hub.DESCRIPTIONS:
        _check_local(Path(name))
    if split == "calib" and nsamples is None:
        raise ValueError("calibration needs a number of windows: pass nsamples")
    if name == "c4" and split == "calib":
        windows = hub.c4_calibration_windows(tokenizer, nsamples, seqlen, seed)
    else:
        tokens = token_stream(name, tokenizer, lambda: load_text(name, split), split)
        if name == "c4":  # the protocol evaluates the first 256 windows of the validation text
            tokens = tokens[: 256 * seqlen]
        if split == "calib":
            windows = random_windows(tokens, nsamples, seqlen, np.random.default_rng(seed), name)
        else:
            windows = consecutive_windows(tokens, nsamples, seqlen, name)
    return windows if bos is None else prepend_bos(windows, bos)


def check_source(source: str | os.PathLike) -> None:
    """``ValueError`` unless ``source`` is a known corpus name or a readable text path.

    Cheap (reads no text), so callers can validate arguments before heavy work.
    """
    if os.fspath(source) not in KNOWN_SOURCES:
        _check_local(Path(source))


def _check_local(path: Path) -> None:
    if not path.exists():
        raise ValueError(
            f"{os.fspath(path)!r} is not a known corpus ({', '.join(KNOWN_SOURCES)}) and no such "
            "file or directory exists"
        )
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise ValueError(f"directory {path} holds no *.txt files")
    if all(_blank(f) for f in files):
        raise ValueError(f"{path} holds no text (empty or only whitespace)")


def _blank(path: Path) -> bool:
    """Whether a text file is empty or whitespace only (reads at most its first megabyte)."""
    try:
        with open(path, "rb") as f:
            return not f.read(1 << 20).strip()
    except OSError:
        return False  # unreadable: reported when it is read


def _local_text(path: Path) -> str:
    _check_local(path)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    try:
        text = "\n\n".join(f.read_text(encoding="utf-8") for f in files)
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read text from {path}: {err}") from None
    if not text.strip():
        raise ValueError(f"{path} holds no text")
    return text
