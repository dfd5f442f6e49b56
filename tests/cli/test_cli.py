"""The ``jaxprune`` command line: bad input is refused early and clearly; prune → eval."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jaxprune import cli
from jaxprune.checkpoint import load_checkpoint


def run(argv, capsys):
    """Runs the CLI in-process; returns (exit status, stdout, stderr)."""
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse's own errors
        rc = exit_.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


BAD_ARGUMENTS = [
    (["prune", "--sparsity", "1.0"], "sparsity must be in [0, 1)"),
    (["prune", "--sparsity", "-0.2"], "sparsity must be in [0, 1)"),
    (["prune", "--pattern", "4:2"], "0 < N < M"),
    (["prune", "--pattern", "two:four"], "cannot read sparsity target"),
    (["prune", "--sparsity", "0.5", "--pattern", "2:4"], "not both"),
    (["prune", "--method", "nonsense"], "invalid choice: 'nonsense'"),
    (["prune", "--model", "no-such-model"], "not an embedded model name"),
    (["prune", "--method", "wanda", "--calib", "/no/such/corpus"], "not a known corpus"),
    (["prune", "--eval", "/no/such/corpus"], "not a known corpus"),
    (["prune", "--nsamples", "0", "--method", "wanda"], "nsamples must be a positive integer"),
    (["prune", "--targets", "layers/("], "invalid path regex"),
    (["prune", "--allocation", "owl", "--pattern", "2:4"], "N:M pattern"),
    (["prune", "--option", "blocksize"], "KEY=VALUE"),
    (["prune", "--method", "wanda", "--option", "percdamp=0.1"], "has no options"),
    (["prune", "--override", "layers/0/.*"], "REGEX=SPARSITY"),
    (["prune", "--override", "layers/0/.*=lots"], "cannot read sparsity"),
    (["prune", "--override", "no/such/path=0.3"], "matches none of the pruned paths"),
    (["prune", "--mesh", "2by4"], "is not DATAxMODEL"),
    (["prune", "--mesh", "3x3"], "needs 9 devices"),
    (["eval", "--data", "/no/such/corpus"], "not a known corpus"),
    (["eval", "--nsamples", "-3"], "--nsamples must be a positive integer"),
    (["eval", "--model", "/no/such/model"], "no such file or directory"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_ARGUMENTS)
def test_bad_argument_is_refused_with_a_clear_message(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    extra = ["--out", out] if argv[0] == "prune" else []
    rc, stdout, stderr = run([*argv, *extra], capsys)
    assert rc != 0
    assert message in stderr
    assert stdout == ""
    assert not out.exists()


def test_override_options_reach_the_recipe_after_the_recipe_file(tmp_path):
    from jaxprune.recipes import Recipe

    recipe_file = tmp_path / "recipe.yaml"
    Recipe(method="wanda", sparsity=0.5, overrides=((r"layers/1/.*", 0.2),)).save(recipe_file)
    argv = ["prune", "--recipe", recipe_file, "--override", "layers/0/mlp/.*=0.7"]
    argv += ["--override", ".*/down_proj/kernel=2:4"]
    args = cli.build_parser().parse_args([str(a) for a in argv])
    recipe = cli._args.recipe_from_args(args)
    assert dict(recipe.overrides) == {
        "layers/1/.*": 0.2,
        "layers/0/mlp/.*": 0.7,
        ".*/down_proj/kernel": "2:4",
    }


def test_model_file_that_is_not_gguf_is_refused(tmp_path, capsys):
    text = tmp_path / "weights.bin"
    text.write_text("not a model")
    rc, _, stderr = run(["eval", "--model", text], capsys)
    assert rc == 2
    assert "must be a .gguf file" in stderr


def test_existing_output_directory_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, _, stderr = run(["prune", "--out", out], capsys)
    assert rc == 2
    assert "already exists" in stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_corrupt_gguf_fails_cleanly_without_output(tmp_path, capsys):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 20)
    out = tmp_path / "out"
    rc, stdout, stderr = run(["prune", "--model", bad, "--out", out], capsys)
    assert rc != 0
    assert "broken.gguf" in stderr
    assert stdout == ""
    assert not out.exists()


def test_help_explains_every_prune_option():
    # Through the installed console script, as a user would call it.
    exe = (
        shutil.which("jaxprune", path=os.path.dirname(sys.executable))
        or shutil.which("jaxprune")
        or pytest.fail("the jaxprune console script is not installed")
    )
    text = subprocess.run([exe, "prune", "--help"], capture_output=True, text=True, check=True)
    for option in (
        "--method",
        "--sparsity",
        "--pattern",
        "--calib",
        "--nsamples",
        "--seqlen",
        "--seed",
        "--eval",
        "--out",
        "--compact",
        "--allocation",
        "--option",
        "--override",
        "--mesh",
        "--offload",
    ):
        assert option in text.stdout


@pytest.mark.slow  # long end-to-end run; the default run covers its parts
@pytest.mark.real_model
def test_magnitude_prune_then_eval_of_the_saved_model_round_trips(tmp_path, capsys):
    out = tmp_path / "pruned"
    common = ["--seqlen", 128]
    rc, stdout, stderr = run(
        [
            "prune",
            "--model",
            "smollm2-135m",
            "--method",
            "magnitude",
            "--sparsity",
            0.5,
            "--eval",
            "shakespeare-hamlet",
            "--eval-nsamples",
            2,
            "--eval-seqlen",
            128,
            "--out",
            out,
            "--compact",
            "--json",
            *common,
        ],
        capsys,
    )
    assert rc == 0, stderr
    report = json.loads(stdout)
    layers = report["layers"]
    # Every attention and MLP projection of the 30 blocks, and nothing else, at exactly 50%.
    assert len(layers) == 30 * 7
    assert all("_proj/kernel" in path for path in layers)
    assert all(entry["sparsity"] == 0.5 for entry in layers.values())
    assert report["eval"]["pruned"]["ppl"] > report["eval"]["dense"]["ppl"]
    assert report["checkpoint"]["bytes_on_disk"] < report["checkpoint"]["dense_bytes"]

    rc, stdout, stderr = run(
        [
            "eval",
            "--model",
            out,
            "--data",
            "shakespeare-hamlet",
            "--nsamples",
            2,
            "--json",
            *common,
        ],
        capsys,
    )
    assert rc == 0, stderr
    again = json.loads(stdout)
    assert again["ppl"] == pytest.approx(report["eval"]["pruned"]["ppl"], rel=1e-6)
    assert again["tokens"] == report["eval"]["pruned"]["tokens"]

    saved = load_checkpoint(out)
    from jaxprune.models.loaders import load_pretrained

    dense = load_pretrained("smollm2-135m").params
    np.testing.assert_array_equal(
        saved.params["embed_tokens"]["embedding"], dense["embed_tokens"]["embedding"]
    )
    np.testing.assert_array_equal(saved.params["norm"]["scale"], dense["norm"]["scale"])
    assert saved.recipe["method"] == "magnitude"
    assert saved.recipe["calibration"] is None  # magnitude read no calibration data


@pytest.mark.slow
@pytest.mark.real_model
def test_mesh_and_offload_options_give_the_same_pruned_model(capsys):
    # Slow (two real-model prunes); the default run checks mesh and offload prunes on the tiny
    # models (tests/test_sharding.py) and the --mesh/--offload argument checks here.
    common = ["prune", "--model", "smollm2-135m", "--method", "sparsegpt", "--sparsity", 0.5]
    common += ["--nsamples", 2, "--seqlen", 64, "--eval", "shakespeare-hamlet"]
    common += ["--eval-nsamples", 1, "--json"]
    rc, stdout, stderr = run(common, capsys)
    assert rc == 0, stderr
    plain = json.loads(stdout)
    rc, stdout, stderr = run([*common, "--mesh", "1x1", "--offload"], capsys)
    assert rc == 0, stderr
    placed = json.loads(stdout)
    assert placed["eval"]["pruned"]["ppl"] == pytest.approx(
        plain["eval"]["pruned"]["ppl"], rel=1e-5
    )
    assert placed["overall_sparsity"] == plain["overall_sparsity"]


def test_a_structured_recipe_file_is_accepted_and_explicit_options_override_it(tmp_path):
    from jaxprune.structured import StructuredRecipe

    recipe_file = tmp_path / "flap.yaml"
    StructuredRecipe(method="flap", sparsity=0.3, block_range=(1, 3)).save(recipe_file)
    argv = ["prune", "--recipe", str(recipe_file), "--sparsity", "0.25"]
    args = cli.build_parser().parse_args(argv)
    assert cli._args.recipe_file_method(args.recipe) == "flap"
    recipe = cli._args.structured_recipe_from_args(args)
    assert recipe == StructuredRecipe(method="flap", sparsity=0.25, block_range=(1, 3))


def test_a_structured_recipe_file_with_an_unstructured_field_is_refused(tmp_path, capsys):
    recipe_file = tmp_path / "bad.yaml"
    recipe_file.write_text("method: llm-pruner\nsparsity: 0.2\nowl_m: 3\n")
    rc, stdout, stderr = run(["prune", "--recipe", recipe_file], capsys)
    assert rc == 2 and stdout == ""
    assert "unknown structured recipe fields ['owl_m']; known: [" in stderr
