"""The command line as a careful new user meets it: exit codes, messages, summaries, records."""

from __future__ import annotations

import json

import flax
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import pytest
from tiny_checkpoint import save_tiny_model, write_corpus

from jaxprune import cli
from jaxprune.checkpoint import load_checkpoint
from jaxprune.models.loaders import load_pretrained
from jaxprune.recipes import Recipe


def run(argv, capsys):
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse's own errors, --help, --version
        rc = exit_.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return save_tiny_model(root / "model"), write_corpus(root / "corpus.txt")


def prune_args(tiny, *extra):
    model, corpus = tiny
    return ["prune", "--model", model, "--calib", corpus, "--nsamples", 4, "--seqlen", 16, *extra]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--method", "wanda", "--override", "layers/9/.*=0.3"],
            "matches none of the pruned paths",
        ),
        (
            ["--method", "wanda", "--seqlen", 128],
            "longer than this model's max_position_embeddings",
        ),
        (["--eval", "CORPUS", "--eval-nsamples", 1000, "--eval-seqlen", 16], "windows of 16 fit"),
        (["--method", "wanda", "--calib", "EMPTY"], "holds no text"),
        (["--recipe", "MISSING"], "no such file"),
        (["--method", "wanda", "--targets", "lm_head/kernel"], "not linears of a decoder block"),
    ],
)
def test_bad_input_found_against_the_model_exits_2_before_any_work(
    tiny, tmp_path, capsys, extra, message
):
    (tmp_path / "empty.txt").write_text("   \n")
    replace = {"CORPUS": tiny[1], "EMPTY": tmp_path / "empty.txt", "MISSING": tmp_path / "r.yml"}
    extra = [replace.get(str(a), a) for a in extra]
    out = tmp_path / "out"
    rc, stdout, stderr = run([*prune_args(tiny, *extra), "--out", out], capsys)
    assert rc == 2, stderr
    assert message in stderr and stderr.count("\n") == 1
    assert stdout == "" and not out.exists()


def test_a_malformed_recipe_is_one_line_naming_file_line_and_problem(tiny, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: wanda\nsparsity: [0.5\n")
    rc, _, stderr = run([*prune_args(tiny), "--recipe", recipe], capsys)
    assert rc == 2
    assert f"{recipe}:3:1: not valid YAML" in stderr and stderr.count("\n") == 1


def test_overwrite_of_something_else_is_refused_before_any_work(tiny, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    rc, _, stderr = run([*prune_args(tiny), "--out", out, "--overwrite"], capsys)
    assert rc == 2 and "replaces jaxprune checkpoints only" in stderr
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_checkpoint_without_its_manifest_says_what_is_missing(tiny, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny[0], broken)
    (broken / "jaxprune_checkpoint.json").unlink()
    rc, _, stderr = run(["eval", "--model", broken], capsys)
    assert rc == 2 and "jaxprune_checkpoint.json" in stderr and "model_type" not in stderr


def test_demo_with_an_impossible_sparsity_exits_2(capsys):
    rc, _, stderr = run(["demo", "--sparsity", "1.5"], capsys)
    assert rc == 2 and "sparsity must be in [0, 1)" in stderr


def test_prune_prints_a_summary_and_records_what_ran(tiny, tmp_path, capsys):
    out = tmp_path / "pruned"
    argv = prune_args(tiny, "--method", "wanda", "--sparsity", "2:4", "--eval", tiny[1])
    rc, stdout, stderr = run(
        [*argv, "--eval-nsamples", 2, "--eval-seqlen", 8, "--out", out], capsys
    )
    assert rc == 0, stderr
    lines = stdout.strip().splitlines()
    assert len(lines) == 3
    assert "wanda 2:4" in lines[0] and "50.0%" in lines[0] and "4×16" in lines[0]
    assert "perplexity on" in lines[1] and "->" in lines[1]
    assert str(out) in lines[2]
    saved = load_checkpoint(out)
    assert saved.recipe["sparsity"] == "2:4" and saved.recipe["nsamples"] == 4
    assert saved.recipe["calibration"] == {
        "source": str(tiny[1]),
        "windows": 4,
        "seqlen": 16,
        "seed": 0,
        "bos": False,  # a LLaMA expects no BOS
    }
    versions = saved.recipe["versions"]  # the packages that decide the numbers
    assert versions["jax"] == jax.__version__ and versions["flax"] == flax.__version__
    assert versions["jaxlib"] == jaxlib.__version__ and versions["numpy"] == np.__version__
    assert Recipe.from_dict(saved.recipe).sparsity == "2:4"  # the saved recipe runs again
    assert saved.report["eval"]["dense"]["tokens"] == 2 * 7  # 2 windows of 8, next-token targets


def test_json_prints_the_full_report_and_no_out_is_noted(tiny, capsys):
    rc, stdout, stderr = run([*prune_args(tiny, "--method", "magnitude"), "--json"], capsys)
    assert rc == 0, stderr
    report = json.loads(stdout)
    assert report["method"] == "magnitude" and len(report["layers"]) == 14
    assert "no --out given" in stderr


def test_dtype_bfloat16_prunes_saves_and_reloads_in_bfloat16(tiny, tmp_path, capsys):
    out = tmp_path / "bf16"
    argv = prune_args(tiny, "--method", "sparsegpt", "--dtype", "bfloat16", "--out", out)
    rc, _, stderr = run(argv, capsys)
    assert rc == 0, stderr
    saved = load_checkpoint(out)
    assert saved.params["layers"][0]["mlp"]["up_proj"]["kernel"].dtype == jnp.bfloat16
    again = load_pretrained(out)
    assert again.model.dtype == jnp.bfloat16
    assert load_pretrained(out, jnp.float32).params["norm"]["scale"].dtype == jnp.float32


def test_generate_is_greedy_by_default_and_sampling_is_seeded(tiny, capsys):
    from jaxprune.models.generate import greedy_generate

    base = ["generate", "--model", tiny[0], "--prompt", "to be or", "--max-new-tokens", 6]
    rc, stdout, _ = run([*base, "--json"], capsys)
    assert rc == 0
    greedy = json.loads(stdout)
    pre = load_pretrained(tiny[0])
    expected = greedy_generate(pre.model, pre.params, pre.tokenizer.encode("to be or"), 6, 1)
    assert greedy["tokens"] == expected
    sampled = []
    for seed in (3, 3, 4):
        rc, stdout, _ = run([*base, "--temperature", 1.5, "--seed", seed, "--json"], capsys)
        sampled.append(json.loads(stdout)["tokens"])
    assert sampled[0] == sampled[1]
    rc, stdout, _ = run(base, capsys)
    assert stdout.startswith("to be or")


def test_version_and_help_say_what_there_is(capsys):
    from jaxprune import __version__

    rc, stdout, _ = run(["--version"], capsys)
    assert rc == 0 and stdout.strip() == f"jaxprune {__version__}"
    rc, stdout, _ = run(["prune", "--help"], capsys)
    assert "sparsegpt: blocksize=128, percdamp=0.01" in " ".join(stdout.split())
    assert "ria: alpha=0.5" in " ".join(stdout.split())
    rc, stdout, _ = run(["demo", "--help"], capsys)
    assert "(default: sparsegpt)" in stdout and "(default: 64)" in stdout
    rc, stdout, _ = run(["eval", "--help"], capsys)
    assert "Measure the perplexity" in stdout


def test_overlapping_calibration_windows_are_warned_about(tiny, capsys):
    rc, _, stderr = run(
        [*prune_args(tiny, "--method", "wanda", "--nsamples", 400), "--json"], capsys
    )
    assert rc == 0
    assert "calibration windows overlap" in stderr
