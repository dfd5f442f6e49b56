"""Mixtral and Qwen3-MoE in and out of Hugging Face, against transformers' PyTorch models.

A tiny random model saved with ``save_pretrained`` loads with ``jp.load_pretrained`` (per-expert
tensors stacked) and computes transformers' logits; exported back (one tensor per expert), it
loads in ``AutoModelForCausalLM`` and computes the same logits.
"""

from __future__ import annotations

import types

import jax.numpy as jnp
import numpy as np
import pytest
from hf_families import (
    assert_head_of_hidden_states_is_the_logits,
    relative_error,
    tokens,
    torch_logits,
)
from hf_moe import MOE_FAMILIES, hf_moe_model
from transformers import AutoModelForCausalLM

import jaxprune as jp
from jaxprune.engine import PrunePlan
from jaxprune.models.export import export_hf

TOLERANCE = 1e-4  # relative: max |Δ| / max |logit|


@pytest.fixture(scope="module", params=MOE_FAMILIES)
def family(request, tmp_path_factory):
    torch_model = hf_moe_model(request.param)
    directory = tmp_path_factory.mktemp(request.param) / "hf"
    torch_model.save_pretrained(directory)
    return types.SimpleNamespace(
        name=request.param, torch=torch_model, dir=directory, loaded=jp.load_pretrained(directory)
    )


def _logits(pretrained, params, ids) -> np.ndarray:
    return np.asarray(pretrained.model.logits(params, jnp.asarray(ids)))


def test_experts_are_stacked_and_the_router_is_a_linear(family):
    config = family.loaded.model.config
    mlp = family.loaded.params["layers"][1]["mlp"]
    e, d, f = config.num_local_experts, config.hidden_size, config.intermediate_size
    assert (e, config.num_experts_per_tok) == (4, 2)
    assert mlp["experts"]["gate_proj"]["kernel"].shape == (e, d, f)
    assert mlp["experts"]["down_proj"]["kernel"].shape == (e, f, d)
    assert mlp["gate"]["kernel"].shape == (d, e)


def test_load_pretrained_gives_transformers_logits(family):
    ids = tokens()
    expected = torch_logits(family.torch, ids)
    assert expected.std() > 0.5
    assert relative_error(_logits(family.loaded, family.loaded.params, ids), expected) < TOLERANCE


def test_head_of_hidden_states_is_the_logits(family):
    assert_head_of_hidden_states_is_the_logits(family.loaded)


def test_export_round_trips_through_transformers(family, tmp_path):
    export_hf(tmp_path / "out", family.loaded.model, family.loaded.params)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "out").float().eval()
    ids = tokens(seed=1)
    ours = _logits(family.loaded, family.loaded.params, ids)
    assert relative_error(ours, torch_logits(again, ids)) < TOLERANCE


def test_the_router_is_not_pruned_by_default(family):
    pre = family.loaded
    method = jp.get_method("wanda")
    plan = PrunePlan.build(pre.model, pre.params, jp.Recipe(method="wanda"), method)
    assert "layers/0/mlp/experts/gate_proj/kernel" in plan.paths
    assert not any(p.endswith("mlp/gate/kernel") for p in plan.paths)
