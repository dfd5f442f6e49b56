"""``generate`` refuses what cannot run, with the numbers, before tracing anything."""

from __future__ import annotations

import pytest
from tiny_checkpoint import save_tiny_model

from jaxprune import cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("gen") / "tiny")


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_prompt_plus_new_tokens_beyond_the_positions_is_refused(model_dir, capsys):
    argv = ["generate", "--model", model_dir, "--prompt", "to be or", "--max-new-tokens", 100]
    rc, _, err = run(argv, capsys)
    assert rc == 2
    assert "3 prompt tokens + 100 new tokens = 103 > max_position_embeddings=64" in err


def test_top_k_above_the_vocabulary_is_refused(model_dir, capsys):
    argv = ["generate", "--model", model_dir, "--prompt", "to be", "--temperature", 1.0]
    rc, _, err = run([*argv, "--top-k", 1000], capsys)
    assert rc == 2 and "--top-k 1000 is larger than the vocabulary (32 tokens)" in err
