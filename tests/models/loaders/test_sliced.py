"""Reading a Hugging Face checkpoint by slices equals reading it whole; each process holds only
its devices' slices (2 processes in the slow suite)."""

import json

import numpy as np
import pytest
import torch
from llama_files import hf_llama
from processes import python, run_processes

from jaxprune import sharding
from jaxprune.core.paths import get_leaf, leaf_paths
from jaxprune.models.loaders.hf import load_hf_checkpoint
from jaxprune.models.loaders.sliced import load_sliced


@pytest.mark.parametrize("tie", [False, True])
def test_sliced_loading_equals_whole_loading_from_sharded_bfloat16_files(tmp_path, tie):
    hf_llama(96, seed=0, tie=tie).to(torch.bfloat16).save_pretrained(
        tmp_path, max_shard_size="40KB"
    )
    assert (tmp_path / "model.safetensors.index.json").is_file()
    sliced = load_sliced(tmp_path, sharding.make_mesh((1, 1)))
    whole = load_hf_checkpoint(tmp_path)
    assert leaf_paths(sliced.params) == leaf_paths(whole.params)
    for path in leaf_paths(whole.params):
        got, want = (
            np.asarray(get_leaf(sliced.params, path)),
            np.asarray(get_leaf(whole.params, path)),
        )
        assert got.dtype == want.dtype, path
        np.testing.assert_array_equal(got, want, err_msg=path)


@pytest.mark.slow
def test_each_of_two_processes_reads_only_its_devices_slices(tmp_path):
    hf_llama(96, seed=0, tie=False).save_pretrained(tmp_path, max_shard_size="40KB")
    argv = python("sliced_check.py", str(tmp_path), "{coordinator}", "{processes}", "{id}")
    finished = run_processes(argv, processes=2, devices=2, timeout=600)
    for proc in finished:
        assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [
        json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1]) for p in finished
    ]
    for report in reports:
        assert report["equal"]
        # Kernels split 4 ways over the model axis: a process holds half of each.
        assert report["kernel_bytes_held"] * 2 == report["kernel_bytes_total"]
