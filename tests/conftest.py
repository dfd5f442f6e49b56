"""Shared test setup: the helper modules (tiny configs, file writers, layers) are importable."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))


@pytest.fixture(scope="session")
def trained_tokenizer():
    """A small SmolLM-style byte-level BPE tokenizer (see ``helpers/llama_files.py``)."""
    from llama_files import train_tokenizer

    return train_tokenizer()
