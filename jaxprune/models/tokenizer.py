"""A thin wrapper over a Hugging Face ``tokenizers.Tokenizer``.

jaxprune only needs text -> ids and back, plus the BOS/EOS ids; everything else (normalisation,
pre-tokenisation, BPE) is the ``tokenizers`` library's. A tokenizer is stored as the standard
``tokenizer.json`` plus a small ``jaxprune_tokenizer.json`` holding the BOS/EOS ids, so that it can
travel inside a jaxprune checkpoint and be read back without ``transformers``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import tokenizers

from jaxprune.core.optional import require

TOKENIZER_FILE = "tokenizer.json"
SPECIAL_IDS_FILE = "jaxprune_tokenizer.json"
# Files that make a directory a Hugging Face tokenizer even without ``tokenizer.json``.
_HF_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


class Tokenizer:
    """Text <-> token ids.

    Args:
      tokenizer: the ``tokenizers.Tokenizer`` doing the work.
      bos_token_id: id of the beginning-of-sequence token, if the model has one.
      eos_token_id: id of the end-of-sequence token, if the model has one.
    """

    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
    ):
        self.backend = tokenizer
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, bos_token_id={self.bos_token_id}, "
            f"eos_token_id={self.eos_token_id})"
        )

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without BOS/EOS or any other template tokens."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """The text of ``ids``; special tokens are kept unless ``skip_special_tokens``."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes ``tokenizer.json`` and ``jaxprune_tokenizer.json`` into ``directory``.

        Returns:
          The directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / TOKENIZER_FILE))
        ids = {"bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id}
        (directory / SPECIAL_IDS_FILE).write_text(json.dumps(ids, indent=2) + "\n")
        return directory

    @staticmethod
    def in_directory(path: str | os.PathLike) -> bool:
        """Whether ``path`` holds a tokenizer :meth:`from_directory` can read."""
        path = Path(path)
        return any((path / name).is_file() for name in (TOKENIZER_FILE, *_HF_TOKENIZER_FILES))

    @classmethod
    def from_directory(cls, path: str | os.PathLike) -> Tokenizer:
        """Reads a tokenizer saved by :meth:`save` or a Hugging Face model/tokenizer directory.

        ``tokenizer.json`` is read directly. A Hugging Face directory without one (e.g. only
        ``vocab.json`` + ``merges.txt`` or a SentencePiece ``tokenizer.model``) is converted by
        ``transformers.AutoTokenizer``. BOS/EOS ids come from ``jaxprune_tokenizer.json`` if
        present, else from ``tokenizer_config.json`` / ``config.json``.

        Raises:
          ValueError: the directory holds no tokenizer.
        """
        path = Path(path)
        if (path / TOKENIZER_FILE).is_file():
            backend = tokenizers.Tokenizer.from_file(str(path / TOKENIZER_FILE))
            bos, eos = _special_ids(path, backend)
            return cls(backend, bos, eos)
        if any((path / name).is_file() for name in _HF_TOKENIZER_FILES):
            return _from_transformers(path)
        raise ValueError(
            f"{path} holds no tokenizer: expected {TOKENIZER_FILE} (or a Hugging Face tokenizer "
            f"such as {', '.join(_HF_TOKENIZER_FILES)})"
        )


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _special_ids(path: Path, backend: tokenizers.Tokenizer) -> tuple[int | None, int | None]:
    saved = _read_json(path / SPECIAL_IDS_FILE)
    if saved:
        return saved.get("bos_token_id"), saved.get("eos_token_id")
    # A Hugging Face directory names its special tokens in tokenizer_config.json (as strings or as
    # AddedToken dicts); the model config.json is the fallback.
    tok_config = _read_json(path / "tokenizer_config.json")
    model_config = _read_json(path / "config.json")
    ids = []
    for kind in ("bos", "eos"):
        token = tok_config.get(f"{kind}_token")
        if isinstance(token, dict):
            token = token.get("content")
        token_id = backend.token_to_id(token) if isinstance(token, str) else None
        if token_id is None:
            token_id = model_config.get(f"{kind}_token_id")
            if isinstance(
                token_id, list
            ):  # some configs list several EOS ids; the first is primary
                token_id = token_id[0] if token_id else None
        ids.append(token_id)
    return ids[0], ids[1]


def _from_transformers(path: Path) -> Tokenizer:
    transformers = require(
        "transformers",
        f"{path} has no {TOKENIZER_FILE}; converting its tokenizer needs transformers "
        "(pip install 'jaxprune[hf]')",
        ValueError,
    )
    hf = transformers.AutoTokenizer.from_pretrained(str(path))
    backend = getattr(hf, "backend_tokenizer", None)
    if not isinstance(backend, tokenizers.Tokenizer):
        raise ValueError(
            f"the tokenizer in {path} could not be converted to a fast (tokenizers) tokenizer; "
            f"save it with tokenizer.save_pretrained() from a recent transformers to get "
            f"{TOKENIZER_FILE}"
        )
    return Tokenizer(backend, hf.bos_token_id, hf.eos_token_id)
