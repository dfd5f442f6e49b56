"""Hub corpora in the standard SparseGPT/Wanda protocols (needs ``datasets`` and a hub).

``wikitext2``: ``wikitext``/``wikitext-2-raw-v1``, train records joined with ``" "`` and test
records with ``"\\n\\n"`` (as SparseGPT/Wanda tokenize them); ``ptb``: ``ptb_text_only``, sentences
joined with ``" "``; ``c4``: the first ``allenai/c4`` English shard for calibration (a random
document longer than a window, then a random window of it, per sample) and the first validation
shard for evaluation (first 1100 documents joined with ``" "``, first 256 windows).
``datasets`` is imported only here, only when such a corpus is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxprune.core.optional import require

DESCRIPTIONS = {
    "wikitext2": "WikiText-2 raw (train for calib, test for eval); needs datasets + hub",
    "c4": "C4 English, first shard (calib) / first validation shard (eval); needs datasets + hub",
    "ptb": "Penn Treebank (train for calib, test for eval); needs datasets + hub",
}
_C4_FILES = {
    "calib": "en/c4-train.00000-of-01024.json.gz",
    "eval": "en/c4-validation.00000-of-00008.json.gz",
}
C4_EVAL_DOCS = 1100


def join_records(name: str, records: Sequence[str], split: str) -> str:
    """The protocol's text of a split from its records (pure; the part the tests pin down).

    Args:
      name: ``wikitext2``, ``ptb`` or ``c4``.
      records: the split's ``text``/``sentence`` column.
      split: ``calib`` (train records) or ``eval`` (test/validation records).

    Returns:
      The single string the protocol tokenizes.
    """
    if name == "wikitext2":
        return ("\n\n" if split == "eval" else " ").join(records)
    if name == "ptb":
        return " ".join(records)
    if name == "c4":
        if split != "eval":
            # C4 calibration samples single documents, never a joined stream.
            raise ValueError("c4 calibration has no joined text; use load_windows(split='calib')")
        return " ".join(records[:C4_EVAL_DOCS])
    raise ValueError(f"unknown hub corpus {name!r}; known: {sorted(DESCRIPTIONS)}")


def _load(name: str, split: str):
    datasets = require(
        "datasets",
        f"the {name!r} corpus needs the `datasets` package (pip install 'jaxprune[hub]') and "
        "access to the Hugging Face hub; offline, use shakespeare-calib / shakespeare-hamlet or a "
        "path to text files",
    )
    try:
        if name == "wikitext2":
            hf_split = "train" if split == "calib" else "test"
            return datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=hf_split)["text"]
        if name == "ptb":
            hf_split = "train" if split == "calib" else "test"
            data = datasets.load_dataset("ptb_text_only", "penn_treebank", split=hf_split)
            return data["sentence"]
        data = datasets.load_dataset(
            "allenai/c4", data_files={"data": _C4_FILES[split]}, split="data"
        )
        return data["text"]
    except Exception as err:  # network, auth, missing dataset: all end the same way for a user
        raise RuntimeError(
            f"could not load {name!r} from the Hugging Face hub ({type(err).__name__}: {err}); "
            "offline, use shakespeare-calib / shakespeare-hamlet or a path to text files"
        ) from None


def load_text(name: str, split: str) -> str:
    """The protocol's text of corpus ``name`` for ``split`` (``calib`` or ``eval``)."""
    return join_records(name, _load(name, split), split)


def sample_document_windows(
    docs: Sequence[str], tokenizer, nsamples: int, seqlen: int, seed: int
) -> np.ndarray:
    """C4 calibration: per sample, random documents until one exceeds ``seqlen`` tokens, then a
    random window of it."""
    rng = np.random.default_rng(seed)
    windows = []
    for _ in range(nsamples):
        for _attempt in range(10_000):
            ids = tokenizer.encode(docs[int(rng.integers(len(docs)))])
            if len(ids) > seqlen:
                break
        else:
            raise ValueError(f"no document has more than {seqlen} tokens; lower seqlen")
        start = int(rng.integers(0, len(ids) - seqlen))
        windows.append(ids[start : start + seqlen])
    return np.asarray(windows, np.int32)


def c4_calibration_windows(tokenizer, nsamples: int, seqlen: int, seed: int) -> np.ndarray:
    """C4 calibration windows (see :func:`sample_document_windows`)."""
    return sample_document_windows(_load("c4", "calib"), tokenizer, nsamples, seqlen, seed)
