"""``jaxprune prune --method llm-pruner|flap``: early errors, then prune → save → eval."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import tokenizers
from structured_models import TINY_GQA, random_params

from jaxprune import cli
from jaxprune.cli.prune import summary
from jaxprune.models import LanguageModel
from jaxprune.models.loaders import Pretrained, load_pretrained, save_pruned
from jaxprune.models.tokenizer import Tokenizer


def run(argv, capsys):
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        rc = exit_.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny GQA checkpoint with a word-level tokenizer, and a text corpus it can read."""
    root = tmp_path_factory.mktemp("tiny")
    words = ["<s>", "</s>", "<unk>", "to", "be", "or", "not", "that", "is", "the", "question"]
    backend = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>")
    )
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    model = LanguageModel(TINY_GQA)
    params = random_params(model)
    pre = Pretrained(model, params, Tokenizer(backend, bos_token_id=0, eos_token_id=1), "tiny")
    save_pruned(root / "model", pre, params)
    rng = np.random.default_rng(0)
    (root / "text.txt").write_text(" ".join(rng.choice(words[3:], size=2000)))
    return root


BAD = [
    (["--method", "llm-pruner", "--sparsity", "1.2"], r"in (0, 1)"),
    (["--method", "flap", "--sparsity", "0"], r"in (0, 1)"),
    (
        ["--method", "llm-pruner", "--pattern", "2:4"],
        "--pattern do not apply to --method llm-pruner",
    ),
    (["--method", "flap", "--compact"], "--compact do not apply"),
    (["--method", "llm-pruner", "--block-range", "3-9"], "write START:END"),
    (["--method", "llm-pruner", "--allocation", "owl"], "use per-block or global"),
    (["--method", "wanda", "--importance", "vector"], "--importance apply to --method llm-pruner"),
    (["--method", "flap", "--importance", "l2"], "importance applies to llm-pruner"),
    (["--method", "llm-pruner", "--sparsity", "0.2", "--block-range", "0:9"], "past the model"),
    (["--method", "llm-pruner", "--sparsity", "0.95"], "impossible"),
]


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_bad_structured_arguments_are_refused_early(argv, message, tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, stderr = run(["prune", "--model", tiny_dir / "model", *argv, "--out", out], capsys)
    assert rc != 0
    assert message in stderr
    assert stdout == "" and not out.exists()


@pytest.mark.parametrize(
    "extra",
    [
        ["--method", "llm-pruner", "--importance", "element2", "--reduction", "max"],
        ["--method", "flap", "--attention-unit", "kv_group"],
    ],
)
def test_structured_prune_saves_a_smaller_model_that_evaluates(extra, tiny_dir, tmp_path, capsys):
    out = tmp_path / "pruned"
    text = tiny_dir / "text.txt"
    argv = ["prune", "--model", tiny_dir / "model", *extra, "--sparsity", 0.3, "--calib", text]
    argv += ["--nsamples", 4, "--seqlen", 16, "--eval", text, "--eval-nsamples", 3]
    argv += ["--eval-seqlen", 16, "--out", out]
    rc, stdout, stderr = run([*argv, "--json"], capsys)
    assert rc == 0, stderr
    report = json.loads(stdout)
    headline = summary(report, SimpleNamespace(calib=str(text)), report["checkpoint"]).splitlines()
    assert f"{report['params_before']:,} -> {report['params_after']:,}" in headline[0]
    assert "calibration" in headline[0] and "perplexity" in headline[1]
    assert report["params_after"] < report["params_before"]
    # within half an attention unit (a tenth of this tiny model's blocks) of the target
    assert report["params_after"] == pytest.approx(0.7 * report["params_before"], rel=0.05)
    assert report["eval"]["pruned"]["tokens"] == report["eval"]["dense"]["tokens"] == 3 * 15
    reloaded = load_pretrained(out)
    assert reloaded.model.config.intermediate_sizes is not None
    rc, stdout, stderr = run(
        ["eval", "--model", out, "--data", text, "--nsamples", 3, "--seqlen", 16, "--json"], capsys
    )
    assert rc == 0, stderr
    assert json.loads(stdout)["ppl"] == pytest.approx(report["eval"]["pruned"]["ppl"], rel=1e-5)
