"""Expert pruning of mixture-of-experts models (REAP, frequency and random baselines).

REAP's scores are checked against a NumPy reference that routes every token by hand (softmax,
top-k, each expert's SwiGLU output) and averages ``g_j(x)·‖f_j(x)‖₂`` over the tokens routed to
``j``; the CLI prunes a tiny transformers Mixtral to half its experts, exports it, and
transformers' model of the export computes our logits.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_families import relative_error, tokens, torch_logits
from hf_moe import hf_moe_model
from moe_models import as_numpy, expert_hidden, moe_model, route_by_hand
from transformers import AutoModelForCausalLM

import jaxprune as jp
from jaxprune.cli import main
from jaxprune.models import LanguageModel, Qwen3MoeConfig
from jaxprune.structured import StructuredRecipe, prune_structured
from jaxprune.structured.experts import routed_statistics


@functools.partial(jax.jit, static_argnums=0)
def _captured(model, block, hidden):
    return model.block(block, hidden, capture=True)


def reference_scores(model, params, calibration):
    """Per block and expert: routed tokens and REAP, routing every token by hand in NumPy."""
    config = model.config
    hidden = model.embed(params, jnp.asarray(calibration))
    counts, scores = [], []
    for i in range(model.num_blocks):
        block = model.block_params(params, i)
        hidden, taps = _captured(model, block, hidden)
        x = np.asarray(taps["router_in"], np.float64)  # the MoE's input, (tokens, d)
        mlp = as_numpy(block["mlp"])
        probs, routed = route_by_hand(x, mlp["gate"]["kernel"], config.num_experts_per_tok)
        n, s = [], []
        for j, rows in enumerate(routed):
            f = expert_hidden(x[rows], mlp["experts"], j) @ mlp["experts"]["down_proj"]["kernel"][j]
            n.append(len(rows))
            s.append(np.mean(probs[rows, j] * np.linalg.norm(f, axis=1)) if len(rows) else 0)
        counts.append(n)
        scores.append(s)
    return np.array(counts), np.array(scores)


def test_reap_scores_equal_a_reference_that_routes_by_hand():
    model, params = moe_model()
    calibration = np.random.default_rng(1).integers(0, 64, (4, 16))
    counts, reap = routed_statistics(model, params, calibration, batch_size=2)
    want_counts, want_reap = reference_scores(model, params, calibration)
    np.testing.assert_array_equal(counts, want_counts)
    assert counts.sum(1).tolist() == [4 * 16 * 2] * 2  # every token goes to top-k experts
    np.testing.assert_allclose(reap, want_reap, rtol=1e-5)


@pytest.mark.parametrize(
    "method",
    [
        "reap",
        pytest.param("expert-frequency", marks=pytest.mark.slow),
        pytest.param("expert-random", marks=pytest.mark.slow),
    ],
)
def test_every_block_keeps_its_highest_scoring_experts(method):
    model, params = moe_model(Qwen3MoeConfig, norm_topk_prob=True)
    calibration = np.random.default_rng(2).integers(0, 64, (4, 16))
    recipe = StructuredRecipe(method=method, sparsity=0.5, nsamples=4, seqlen=16)
    result = prune_structured(model, params, calibration, recipe, progress=False)
    assert result.model.config.num_local_experts == 3
    scores = np.array(result.report["expert_scores"])
    for i, keep in result.keeps.items():
        assert sorted(np.argsort(-scores[i], kind="stable")[:3]) == keep.tolist()
        mlp, dense = result.params["layers"][i]["mlp"], params["layers"][i]["mlp"]
        np.testing.assert_array_equal(mlp["gate"]["kernel"], dense["gate"]["kernel"][:, keep])
        for proj in ("gate_proj", "up_proj", "down_proj"):
            kernel = mlp["experts"][proj]["kernel"]
            np.testing.assert_array_equal(kernel, dense["experts"][proj]["kernel"][keep])
    if method == "expert-frequency":
        assert scores.tolist() == result.report["expert_tokens"]
    if method == "expert-random":  # seeded: the same seed removes the same experts
        again = prune_structured(model, params, None, recipe, progress=False)
        assert again.report["kept_experts"] == result.report["kept_experts"]


def test_a_sparsity_that_leaves_fewer_experts_than_the_top_k_is_refused():
    model, params = moe_model(num_experts_per_tok=4)
    recipe = StructuredRecipe(method="reap", sparsity=0.5)
    with pytest.raises(ValueError, match="fewer than the 4 every token is routed to"):
        prune_structured(model, params, None, recipe, progress=False)
    dense = LanguageModel(jp.LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1))
    with pytest.raises(ValueError, match="needs a mixture-of-experts model"):
        prune_structured(dense, {}, None, recipe, progress=False)  # refused before any work
    with pytest.raises(ValueError, match="removes no expert"):
        prune_structured(model, params, None, StructuredRecipe(method="reap", sparsity=0.1))


@pytest.fixture(scope="module")
def mixtral_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mixtral") / "hf"
    hf_moe_model("mixtral").save_pretrained(directory)
    return directory


@pytest.mark.slow
def test_cli_reap_halves_the_experts_and_the_export_loads_in_transformers(mixtral_dir, tmp_path):
    pruned, out = tmp_path / "pruned", tmp_path / "hf"
    args = ["prune", "--model", str(mixtral_dir), "--method", "reap", "--sparsity", "0.5"]
    args += ["--calib", "random", "--nsamples", "8", "--seqlen", "64", "--out", str(pruned)]
    assert main(args) == 0
    report = json.loads((pruned / "report.json").read_text())
    assert (report["experts_before"], report["experts_after"]) == (4, 2)
    assert np.sum(report["expert_tokens"], axis=1).tolist() == [8 * 64 * 2] * 2
    assert main(["export", "--model", str(pruned), "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["num_local_experts"] == 2
    exported = AutoModelForCausalLM.from_pretrained(out).float().eval()
    again = jp.load_pretrained(pruned)
    ids = tokens(seed=3)
    ours = np.asarray(again.model.logits(again.params, jnp.asarray(ids)))
    assert relative_error(ours, torch_logits(exported, ids)) < 1e-4


def test_cli_refuses_more_experts_per_token_than_remain_before_loading_weights(mixtral_dir, capsys):
    args = ["prune", "--model", str(mixtral_dir), "--method", "reap", "--sparsity", "0.75"]
    assert main([*args, "--calib", "random", "--seqlen", "16"]) == 2
    assert "fewer than the 2 every token is routed to" in capsys.readouterr().err
