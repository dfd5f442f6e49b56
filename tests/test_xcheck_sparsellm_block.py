"""The SparseLLM per-block driver's pieces: what it captures is what the model computes, the
one-block model the original runs on reproduces the block, and the driver's torch-side error of
jaxprune's kernels is jaxprune's own (the roles and layouts map right)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def block(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.xcheck import sparsellm_block

    return sparsellm_block


@pytest.fixture
def tiny():
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.config.use_cache = False
    calib = np.random.default_rng(1).integers(0, 64, (3, 16))
    return model, calib


def outputs_of(module, model, calib):
    seen = []
    handle = module.register_forward_hook(
        lambda _m, _a, out: seen.append((out[0] if isinstance(out, tuple) else out).detach())
    )
    with torch.no_grad():
        for row in calib:
            model(torch.as_tensor(row[None]))
    handle.remove()
    return torch.cat(seen, dim=0)


def test_captured_mlp_input_through_the_driver_mlp_is_the_models_mlp_output(block, tiny):
    model, calib = tiny
    h, x = block.block_inputs(model, calib, 1)
    assert h.shape == (3, 16, 32) and x.shape == (48, 32)
    mlp = model.model.layers[1].mlp
    dense = {role: getattr(mlp, name).weight for role, name in block.ROLES.items()}
    expected = outputs_of(mlp, model, calib).reshape(-1, 32)
    np.testing.assert_allclose(block.mlp_output(dense, x), expected, rtol=1e-5, atol=1e-6)


def test_the_one_block_model_replays_the_block_on_its_captured_inputs(block, tiny):
    model, calib = tiny
    h, _ = block.block_inputs(model, calib, 2)
    expected = outputs_of(model.model.layers[2], model, calib)
    replay, batches = block.replay_model(copy.deepcopy(model), h, 2)
    assert len(replay.model.layers) == 1 and len(batches) == 3
    got = outputs_of(replay.model.layers[0], replay, [b[0][0].numpy() for b in batches])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_driver_error_of_jaxprunes_kernels_is_jaxprunes_best_iterate_error(block, tiny):
    model, calib = tiny
    _, x = block.block_inputs(model, calib, 0)
    x = torch.cat([x, x.flip(0) * 0.5 + 0.1], dim=0)  # more tokens than features
    mlp = model.model.layers[0].mlp
    dense = {role: getattr(mlp, name).weight.detach().clone() for role, name in block.ROLES.items()}
    y = block.mlp_output(dense, x)
    ours = block.jaxprune_block(dense, x, y, 0.5, {"iterations": 3})
    assert len(ours["iterate_errors"]) == 3
    assert block.sparsity_of(ours["weights"]) == pytest.approx(0.5, abs=1e-3)
    error = block.output_error(y, block.mlp_output(ours["weights"], x))
    assert error == pytest.approx(min(ours["iterate_errors"]), rel=1e-3)
    assert block.output_error(y, y) == 0.0 and block.output_error(y, 0 * y) == pytest.approx(1.0)


def test_variants_add_each_refit_ridge_to_every_option_set(block):
    named = block.variants([1e-4, 1e-8])
    assert len(named) == 3 * len(block.BASE)
    assert named["defaults"] == {}
    assert named["like_original_s_frozen@refit_percdamp=1e-08"] == {
        **block.LIKE_ORIGINAL, "s_steps": 0, "refit_percdamp": 1e-8,
    }  # fmt: skip
    assert block.variants([]) == block.BASE


def test_gram_diagonal_stats_on_a_known_diagonal(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.xcheck import sparsellm_gram

    stats = sparsellm_gram.diagonal_stats(np.array([1.0, 1.0, 2.0, 96.0]))
    assert stats == {"top_share": 0.96, "max_over_mean": 3.84, "median_over_mean": 0.06}
