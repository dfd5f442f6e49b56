"""Every family in and out of Hugging Face, checked against transformers' own PyTorch models.

For each of llama (Llama-3.1 rope scaling), mistral, qwen2, qwen3, phi3, gemma3_text and opt, a
tiny random model saved with ``save_pretrained`` (no tokenizer) loads with ``jp.load_pretrained``
and computes transformers' logits; pruned with SparseGPT it computes what transformers computes
with the same pruned weights; and after ``jaxprune prune --calib random`` + ``jaxprune export``,
``AutoModelForCausalLM`` loads the export and computes the same logits.
"""

from __future__ import annotations

import copy
import json
import types

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_families import (
    FAMILIES,
    assert_head_of_hidden_states_is_the_logits,
    hf_model,
    relative_error,
    tokens,
    torch_logits,
)
from transformers import AutoModelForCausalLM

import jaxprune as jp
from jaxprune.cli import main
from jaxprune.models.export import export_hf, hf_tensors

TOLERANCE = 1e-4  # relative: max |Δ| / max |logit|


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    """One transformers model per family, saved once, loaded once."""
    torch_model = hf_model(request.param)
    directory = tmp_path_factory.mktemp(request.param) / "hf"
    torch_model.save_pretrained(directory)
    return types.SimpleNamespace(
        name=request.param,
        torch=torch_model,
        dir=directory,
        loaded=jp.load_pretrained(directory),
    )


def _logits(pretrained, params, ids) -> np.ndarray:
    return np.asarray(pretrained.model.logits(params, jnp.asarray(ids)))


def test_load_pretrained_gives_transformers_logits(family):
    assert family.loaded.tokenizer is None
    ids = tokens()
    expected = torch_logits(family.torch, ids)
    assert expected.std() > 0.5
    assert relative_error(_logits(family.loaded, family.loaded.params, ids), expected) < TOLERANCE


def test_head_of_hidden_states_is_the_logits(family):
    assert_head_of_hidden_states_is_the_logits(family.loaded)


@pytest.mark.slow
def test_export_hf_round_trips_through_transformers(family, tmp_path):
    export_hf(tmp_path / "out", family.loaded.model, family.loaded.params)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "out").float().eval()
    ids = tokens(seed=1)
    ours = _logits(family.loaded, family.loaded.params, ids)
    assert relative_error(ours, torch_logits(again, ids)) < TOLERANCE


@pytest.mark.slow
def test_sparsegpt_pruned_model_equals_transformers_with_the_same_weights(family):
    pre = family.loaded
    calibration = np.random.default_rng(0).integers(0, 128, (8, 12)).astype(np.int32)
    recipe = jp.Recipe(method="sparsegpt", sparsity=0.5)
    result = jp.prune(pre.model, pre.params, calibration, recipe, progress=False)
    assert result.report["overall_sparsity"] == pytest.approx(0.5, abs=0.01)
    pruned_torch = copy.deepcopy(family.torch)
    state = {
        k: torch.from_numpy(np.array(v))
        for k, v in hf_tensors(result.params, pre.model.config).items()
    }
    missing, unexpected = pruned_torch.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    if missing:
        pruned_torch.tie_weights()
    ids = tokens(seed=2)
    ours = _logits(pre, result.params, ids)
    assert relative_error(ours, torch_logits(pruned_torch, ids)) < TOLERANCE
    assert relative_error(ours, _logits(pre, pre.params, ids)) > 1e-2  # the prune changed it


@pytest.mark.slow
def test_cli_prune_with_random_calibration_then_export_loads_in_transformers(family, tmp_path):
    pruned, out = tmp_path / "pruned", tmp_path / "hf"
    prune_args = ["prune", "--model", str(family.dir), "--method", "sparsegpt"]
    prune_args += ["--sparsity", "0.5", "--calib", "random", "--nsamples", "4", "--seqlen", "12"]
    assert main([*prune_args, "--out", str(pruned)]) == 0
    recipe = json.loads((pruned / "recipe.json").read_text())
    assert recipe["calibration"] == {"source": "random", "windows": 4, "seqlen": 12, "seed": 0}
    assert main(["export", "--model", str(pruned), "--out", str(out)]) == 0
    exported = AutoModelForCausalLM.from_pretrained(out).float().eval()
    again = jp.load_pretrained(pruned)
    ids = tokens(seed=3)
    assert (
        relative_error(_logits(again, again.params, ids), torch_logits(exported, ids)) < TOLERANCE
    )
