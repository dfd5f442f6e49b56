"""Tokenised corpora, cached on disk so that the ~5 MB Shakespeare text is encoded once.

The cache key is a hash of the tokenizer's full JSON and of the corpus name and split, so a
different tokenizer never reads another's ids. Local paths are never cached (files change).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable

import numpy as np

from jaxprune._cache import cache_dir
from jaxprune._log import notice

# Bump when the text a corpus name stands for changes, to invalidate cached ids.
CORPUS_VERSION = "1"
_CACHED = ("shakespeare-calib", "shakespeare-hamlet", "wikitext2", "ptb", "c4")


def token_stream(name: str, tokenizer, text: Callable[[], str], split: str) -> np.ndarray:
    """int32 ids of ``text()``, read from / written to the cache for named corpora."""
    if name not in _CACHED:
        return np.asarray(tokenizer.encode(text()), np.int32)
    spec = tokenizer.backend.to_str().encode()
    key = hashlib.sha256(spec + f"|{name}|{split}|{CORPUS_VERSION}".encode()).hexdigest()[:24]
    path = cache_dir() / "tokens" / f"{name}-{split}-{key}.npy"
    if path.is_file():
        return np.load(path)
    content = text()
    notice("tokenizing %s (%.1f MB of text, once; the ids are cached)", name, len(content) / 1e6)
    ids = np.asarray(tokenizer.encode(content), np.int32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, ids)
        os.replace(tmp, path)  # atomic: a reader never sees half an array
    except BaseException:
        os.unlink(tmp)
        raise
    return ids
