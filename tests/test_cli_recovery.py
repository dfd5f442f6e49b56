"""The recovery commands: eval --tasks, recover, export, plot — arguments refused before any work,
and a tiny pruned checkpoint taken through recover → export → plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_models import TINY_LLAMA

from jaxprune.cli import main
from jaxprune.cli.recover import summary as recover_summary
from jaxprune.core.paths import get_leaf, select_paths
from jaxprune.models import LanguageModel, LlamaConfig
from jaxprune.models.loaders import Pretrained, load_pretrained, save_pruned
from jaxprune.models.tokenizer import Tokenizer


def run_cli(capsys, *argv):
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory, trained_tokenizer):
    """A tiny LLaMA with a tokenizer, 50% magnitude-pruned, saved with its masks and report."""
    import jaxprune as jp

    tokenizer = Tokenizer(trained_tokenizer, None, 0)
    config = LlamaConfig(**{**TINY_LLAMA.to_dict(), "vocab_size": tokenizer.vocab_size})
    model = LanguageModel(config)
    pretrained = Pretrained(model, model.init_params(0), tokenizer, "tiny")
    result = jp.prune(model, pretrained.params, None, jp.Recipe(method="magnitude", sparsity=0.5))
    path = tmp_path_factory.mktemp("ckpt") / "pruned"
    save_pruned(path, pretrained, result.params, masks=result.masks, report=result.report)
    return path


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "--model", "smollm2-135m", "--tasks", "piqa,nope"], "unknown zero-shot task"),
        (["eval", "--model", "smollm2-135m", "--tasks", "piqa", "--limit", "0"], "--limit"),
        (["eval", "--tasks", "piqa", "--seqlen", "128"], "--seqlen applies to perplexity"),
        (["eval", "--tasks", "piqa", "--data", "wikitext2"], "--data applies to perplexity"),
        (["recover", "--model", "/no/such/dir", "--out", "x"], "--model"),
        (["recover", "--model", "smollm2-135m", "--rank", "0", "--out", "x"], "rank"),
        (["recover", "--model", "smollm2-135m", "--data", "/no/such.txt", "--out", "x"], "--data"),
        (["recover", "--model", "smollm2-135m", "--steps", "-1", "--out", "x"], "steps"),
        (["export", "--model", "/no/such/dir", "--out", "x"], "--model"),
        (["plot", "/no/such/report.json"], "neither a report"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(capsys, tmp_path, argv, message):
    argv = [a if a != "x" else str(tmp_path / "out") for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_recover_export_plot_a_pruned_checkpoint(capsys, tmp_path, pruned_dir):
    text = tmp_path / "train.txt"
    text.write_text("To be, or not to be, that is the question. " * 200)
    code, out, err = run_cli(
        capsys,
        "recover",
        "--model",
        str(pruned_dir),
        "--data",
        str(text),
        "--eval",
        str(text),
        "--method",
        "lora",
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--seqlen",
        "32",
        "--eval-nsamples",
        "2",
        "--rank",
        "4",
        "--out",
        str(tmp_path / "rec"),
    )
    assert code == 0, err
    assert out["steps"] == 4 and out["tokens"] == 4 * 2 * 32 and len(out["eval"]) == 2
    lines = recover_summary(out).splitlines()  # what a person reads without --json
    assert "lora recovery, 4 steps, 256 tokens" in lines[0]
    assert f"step 4 {out['eval'][-1][1]:.2f}" in lines[1] and lines[-1].endswith("rec")
    recovered = load_pretrained(tmp_path / "rec")
    original = load_pretrained(pruned_dir)
    for path in select_paths(original.params, r"layers/\d+/mlp/\w+_proj/kernel"):
        before, after = (
            np.asarray(get_leaf(original.params, path)),
            np.asarray(get_leaf(recovered.params, path)),
        )
        assert not after[before == 0].any() and not np.array_equal(before, after)
    report = json.loads((tmp_path / "rec" / "report.json").read_text())
    assert "layers" in report and report["recovery"]["method"] == "lora"

    code, out, err = run_cli(
        capsys, "export", "--model", str(tmp_path / "rec"), "--out", str(tmp_path / "hf")
    )
    assert code == 0, err
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in (tmp_path / "hf").iterdir()
    }

    code, out, err = run_cli(capsys, "plot", str(tmp_path / "rec"))
    assert code == 0, err
    assert (tmp_path / "rec" / "report.png").stat().st_size > 10_000


def test_plot_of_a_report_without_records_is_an_error(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"method": "x"}))
    code, _, err = run_cli(capsys, "plot", str(path))
    assert code == 2, err  # bad input: the usage exit code, as every other refusal
    assert "neither per-layer prune records" in err and "nor a recovery history" in err


def test_eval_tasks_prints_per_task_and_average_accuracy(capsys, pruned_dir):
    code, out, err = run_cli(
        capsys, "eval", "--model", str(pruned_dir), "--tasks", "piqa,arc_easy", "--limit", "3"
    )
    assert code == 0, err
    assert set(out["tasks"]) == {"piqa", "arc_easy"} and out["limit"] == 3
    for task in out["tasks"].values():
        assert task["n"] == 3 and 0.0 <= task["acc"] <= 1.0
    scores = [t["score"] for t in out["tasks"].values()]
    assert out["average"] == sum(scores) / 2


def test_eval_tasks_summary_says_one_task_in_the_singular(capsys, pruned_dir):
    assert main(["eval", "--model", str(pruned_dir), "--tasks", "piqa", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert " over 1 task (" in out


def test_eval_help_states_each_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, also at hyphens
    assert "(default:None)" not in text and "(defaultall)(default" not in text
    for default in ("(default32)", "(default512)", "(default8)", "(defaultshakespeare-hamlet)"):
        assert default in text


@pytest.mark.parametrize(
    "hidden, argv, message",
    [
        (
            "pyarrow",
            ["eval", "--model", "smollm2-135m", "--tasks", "piqa"],
            "need the `pyarrow` package: pip install 'jaxprune[eval]'",
        ),
        ("matplotlib", ["plot", "no-such-report-is-read"], "need the `matplotlib` package"),
    ],
)
def test_a_missing_optional_package_is_refused_before_any_work(hidden, argv, message):
    # The package is hidden from a fresh interpreter (also where it is installed), as on a machine
    # with only `pip install jaxprune`; the command must say what to install, with exit status 2,
    # before it touches the model or the report.
    import subprocess
    import sys

    code = (
        f"import sys\nsys.modules[{hidden!r}] = None\n"
        f"from jaxprune.cli import main\nsys.exit(main({argv!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
