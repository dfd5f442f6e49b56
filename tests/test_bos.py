"""BOS for families that expect it (Gemma): every path starts its sequences with it by default,
``--no-bos`` / ``bos=False`` turns it off, and the windows keep their shape and token count."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_checkpoint import save_tiny_gemma, save_tiny_model, tiny_tokenizer, write_corpus

from jaxprune import cli, pipeline
from jaxprune.data import load_windows
from jaxprune.eval import perplexity
from jaxprune.eval.zeroshot import encode_pair
from jaxprune.models import FAMILIES
from jaxprune.models.generate import greedy_generate
from jaxprune.models.loaders import load_pretrained
from jaxprune.recipes import Recipe

BOS = 0  # the tiny tokenizer's <s>; the corpus never contains it


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bos")
    return {
        "gemma": save_tiny_gemma(root / "gemma"),
        "llama": save_tiny_model(root / "llama"),
        "corpus": write_corpus(root / "corpus.txt"),
    }


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_gemma_family_expects_bos_and_llama_does_not():
    assert FAMILIES["gemma3"].bos and not FAMILIES["llama"].bos


def test_bos_windows_keep_their_shape_and_predicted_token_count(files):
    plain = load_windows(files["corpus"], tiny_tokenizer(), nsamples=3, seqlen=16, split="eval")
    with_bos = load_windows(
        files["corpus"], tiny_tokenizer(), nsamples=3, seqlen=16, split="eval", bos=BOS
    )
    assert with_bos.shape == plain.shape
    assert np.all(with_bos[:, 0] == BOS)
    np.testing.assert_array_equal(with_bos[:, 1:], plain[:, :-1])


@pytest.mark.parametrize(
    ("family", "bos", "expected"),
    [("gemma", True, True), ("gemma", False, False), ("llama", True, False)],
)
def test_prepare_starts_every_window_with_bos_only_where_the_family_expects_it(
    files, family, bos, expected
):
    recipe = Recipe(method="wanda", calib=str(files["corpus"]), nsamples=2, seqlen=16)
    job = pipeline.prepare(
        files[family],
        recipe,
        eval_source=files["corpus"],
        eval_nsamples=2,
        eval_seqlen=16,
        bos=bos,
    )
    for windows in (job.calibration, job.eval_windows):
        assert np.all(windows[:, 0] == BOS) == expected
    assert (job.bos is not None) == expected


@pytest.mark.parametrize("flag", [[], ["--no-bos"]])
def test_cli_eval_adds_bos_for_gemma_unless_no_bos(files, flag, capsys):
    argv = [
        "eval",
        "--model",
        files["gemma"],
        "--data",
        files["corpus"],
        "--nsamples",
        2,
        "--seqlen",
        16,
        "--json",
        *flag,
    ]
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    pre = load_pretrained(files["gemma"])
    bos = None if flag else BOS
    windows = load_windows(
        files["corpus"], pre.tokenizer, nsamples=2, seqlen=16, split="eval", bos=bos
    )
    expected = perplexity(pre.model, pre.params, windows, progress=False)
    assert json.loads(out)["ppl"] == pytest.approx(expected.ppl, rel=1e-5)
    assert json.loads(out)["tokens"] == 2 * 15


@pytest.mark.parametrize("flag", [[], ["--no-bos"]])
def test_cli_generate_starts_gemma_prompts_with_bos(files, flag, capsys):
    argv = [
        "generate",
        "--model",
        files["gemma"],
        "--prompt",
        "to be or",
        "--max-new-tokens",
        3,
        "--json",
        *flag,
    ]
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    result = json.loads(out)
    pre = load_pretrained(files["gemma"])
    prompt = ([] if flag else [BOS]) + pre.tokenizer.encode("to be or")
    assert result["prompt_tokens"] == prompt
    assert result["tokens"] == greedy_generate(pre.model, pre.params, prompt, 3, 1)


def test_zero_shot_contexts_start_with_bos_when_given():
    tok = tiny_tokenizer()
    head, tail = encode_pair(tok, "to be or", " not", bos=BOS)
    assert head == [BOS, *tok.encode("to be or")] and tail == tok.encode("not")
    assert encode_pair(tok, "to be or", " not")[0] == tok.encode("to be or")


def test_pretrained_bos_token_follows_the_family_and_the_switch(files):
    pre = load_pretrained(files["gemma"])
    assert pre.bos_token() == BOS and pre.bos_token(False) is None
    assert load_pretrained(files["llama"]).bos_token() is None
