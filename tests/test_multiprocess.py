"""Several JAX processes pruning one model together (``jax.distributed``, CPU collectives).

The processes are local (``tests/helpers/processes.py``: loopback coordinator on a free port,
simulated CPU devices, killed after a timeout). The default run checks the whole command once with
2 processes; the slow suite compares masks of every sharded method against one process with the
same mesh, and measures each process's peak memory.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from processes import CLI_PROCESS_FLAGS, multiprocess_check, python, run_processes
from tiny_checkpoint import save_tiny_model, write_corpus

import jaxprune as jp
from jaxprune import distributed
from jaxprune.checkpoint import is_checkpoint
from jaxprune.core import paths
from jaxprune.pipeline import prune_pretrained

ROOT = Path(__file__).resolve().parents[1]


def _check(finished) -> None:
    for proc in finished:
        assert proc.returncode == 0, proc.stderr[-4000:]


def _printed(proc) -> list[str]:
    """What the command printed (Gloo's C++ connection messages left out)."""
    return [line for line in proc.stdout.splitlines() if not line.startswith("[Gloo]")]


def test_two_processes_prune_and_save_one_checkpoint_that_one_process_reads(tmp_path):
    model = save_tiny_model(tmp_path / "tiny")
    corpus = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "pruned"
    argv = [
        sys.executable,
        "-m",
        "jaxprune.cli",
        "prune",
        "--model",
        str(model),
        "--method",
        "sparsegpt",
        "--sparsity",
        "0.5",
        "--calib",
        str(corpus),
        "--nsamples",
        "4",
        "--seqlen",
        "16",
        "--mesh",
        "2x2",
        "--out",
        str(out),
        "--json",
        *CLI_PROCESS_FLAGS,
    ]
    finished = run_processes(argv, processes=2, devices=2, timeout=300)
    _check(finished)
    report = json.loads(_printed(finished[0])[-1])
    assert _printed(finished[1]) == []  # reported once, by process 0
    assert report["processes"]["count"] == 2 and len(report["processes"]["seconds"]) == 2
    assert is_checkpoint(out)
    assert json.loads((out / "report.json").read_text())["processes"]["count"] == 2

    # One process reads it back, equal to the same prune on one device.
    saved = jp.load_pretrained(out)
    recipe = jp.Recipe(method="sparsegpt", sparsity=0.5, calib=str(corpus), nsamples=4, seqlen=16)
    single = prune_pretrained(str(model), recipe, progress=False)
    for path in single.report["layers"]:
        np.testing.assert_array_equal(
            np.asarray(paths.get_leaf(saved.params, path)) != 0,
            np.asarray(paths.get_leaf(single.masks, path)),
            err_msg=path,
        )
        np.testing.assert_allclose(
            np.asarray(paths.get_leaf(saved.params, path)),
            np.asarray(paths.get_leaf(single.params, path)),
            atol=1e-5,
            err_msg=path,
        )


def test_initialize_takes_all_three_or_none():
    with pytest.raises(ValueError, match="together"):
        distributed.initialize("127.0.0.1:1234", num_processes=2)
    with pytest.raises(ValueError, match=r"not in 0\.\.1"):
        distributed.initialize("127.0.0.1:1234", num_processes=2, process_id=2)
    with pytest.raises(ValueError, match="HOST:PORT"):
        distributed.initialize("127.0.0.1", num_processes=2, process_id=0)


def test_initialize_after_jax_started_is_a_clear_error():
    import jax

    jax.devices()
    with pytest.raises(ValueError, match="before anything touches JAX"):
        distributed.initialize("127.0.0.1:1234", num_processes=2, process_id=0)


def test_the_cli_refuses_processes_without_a_mesh(tmp_path, capsys):
    from jaxprune.cli import main

    model = save_tiny_model(tmp_path / "tiny")
    argv = ["prune", "--model", str(model), "--method", "magnitude", "--sparsity", "0.5"]
    argv += ["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0"]
    assert main(argv) == 2
    assert "needs --mesh" in capsys.readouterr().err


METHODS = ("magnitude", "wanda", "ria", "sparsegpt", "sparsellm")
RECIPES = [f"{method} {target}" for method in METHODS for target in ("0.5", "2:4")]


def _masks(directory: Path, recipe: str) -> dict:
    data = np.load(directory / f"{recipe.replace(' ', '_').replace(':', '-')}.npz")
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def one_process_eight_devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    _check(
        run_processes(
            python("multiprocess_check.py", "--out", str(out), "--recipes", *RECIPES),
            processes=1,
            devices=8,
            timeout=1800,
        )
    )
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("processes", "devices"), [(2, 4), (4, 2)])
def test_masks_of_every_sharded_method_equal_one_process_with_the_same_mesh(
    one_process_eight_devices, tmp_path, processes, devices
):
    argv = multiprocess_check("--out", str(tmp_path), "--recipes", *RECIPES)
    _check(run_processes(argv, processes=processes, devices=devices, timeout=3000))
    for recipe in RECIPES:
        want, got = _masks(one_process_eight_devices, recipe), _masks(tmp_path, recipe)
        assert want.keys() == got.keys()
        for key in want:
            if key.startswith("mask:"):
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{recipe} {key}")
            else:
                np.testing.assert_allclose(got[key], want[key], atol=1e-4, err_msg=recipe)


@pytest.mark.slow
def test_offloaded_multi_process_prune_keeps_own_shards_and_equals_one_process(
    one_process_eight_devices, tmp_path
):
    recipes = ["sparsegpt 0.5", "wanda 2:4"]
    argv = multiprocess_check("--out", str(tmp_path), "--offload", "--recipes", *recipes)
    _check(run_processes(argv, processes=2, devices=4, timeout=1800))
    for recipe in recipes:
        want, got = _masks(one_process_eight_devices, recipe), _masks(tmp_path, recipe)
        for key in want:
            if key.startswith("mask:"):
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{recipe} {key}")
