"""The calibration engine on a tiny random LLaMA, checked against hand-run pruning."""

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_models import TINY_LLAMA

from jaxprune.core import paths
from jaxprune.engine import prune
from jaxprune.models import LanguageModel
from jaxprune.recipes import Recipe

CONFIG = TINY_LLAMA
MODEL = LanguageModel(CONFIG)
LINEARS = (
    "self_attn/q_proj",
    "self_attn/k_proj",
    "self_attn/v_proj",
    "self_attn/o_proj",
    "mlp/gate_proj",
    "mlp/up_proj",
    "mlp/down_proj",
)


@pytest.fixture(scope="module")
def params():
    return MODEL.init_params(0)


@pytest.fixture(scope="module")
def windows():
    return np.random.default_rng(0).integers(0, CONFIG.vocab_size, (6, 16), dtype=np.int32)


def kernel(tree, block, name):
    return np.asarray(paths.get_leaf(tree, f"layers/{block}/{name}/kernel"))


def test_magnitude_prunes_exactly_half_of_every_projection_and_nothing_else(params):
    result = prune(MODEL, params, None, Recipe(method="magnitude", sparsity=0.5), progress=False)
    assert "owl" not in result.report
    for block in range(CONFIG.num_hidden_layers):
        for name in LINEARS:
            k = kernel(result.params, block, name)
            assert np.sum(k == 0) == k.size // 2
    for path in (
        "embed_tokens/embedding",
        "norm/scale",
        "lm_head/kernel",
        "layers/0/input_layernorm/scale",
    ):
        np.testing.assert_array_equal(
            paths.get_leaf(result.params, path), paths.get_leaf(params, path)
        )
        assert paths.get_leaf(result.masks, path) is None


def _wanda_reference_masks(params, windows, sparsity):
    """Wanda by hand: per block, column norms of the dense-block taps, then propagate pruned."""
    hidden = MODEL.embed(params, jnp.asarray(windows))
    out = {}
    for block in range(CONFIG.num_hidden_layers):
        bp = MODEL.block_params(params, block)
        _, taps = MODEL.block(bp, hidden, capture=True)
        tap_of = {
            "self_attn/q_proj": "attn_in",
            "self_attn/k_proj": "attn_in",
            "self_attn/v_proj": "attn_in",
            "self_attn/o_proj": "o_in",
            "mlp/gate_proj": "mlp_in",
            "mlp/up_proj": "mlp_in",
            "mlp/down_proj": "down_in",
        }
        for name, tap in tap_of.items():
            w = np.asarray(paths.get_leaf(bp, f"{name}/kernel"))
            x = np.asarray(taps[tap], np.float64).reshape(-1, w.shape[0])
            score = np.abs(w) * np.sqrt((x * x).sum(0))[:, None]
            keep = np.ones_like(w, bool)
            k = int(w.shape[0] * sparsity)
            for j in range(w.shape[1]):
                keep[np.argsort(score[:, j], kind="stable")[:k], j] = False
            out[(block, name)] = keep
            bp = paths.set_leaves(bp, {f"{name}/kernel": jnp.asarray(w * keep)})
        hidden = MODEL.block(bp, hidden)
    return out


def test_wanda_engine_matches_hand_run_layer_by_layer(params, windows):
    result = prune(
        MODEL, params, windows, Recipe(method="wanda", sparsity=0.5, batch_size=4), progress=False
    )
    reference = _wanda_reference_masks(params, windows, 0.5)
    for (block, name), keep in reference.items():
        got = np.asarray(paths.get_leaf(result.masks, f"layers/{block}/{name}/kernel"))
        # Identical except possibly at exact score ties between float32 and float64 sums.
        assert np.mean(got == keep) > 0.99, (block, name)


def test_sparsegpt_reconstructs_better_than_magnitude_and_wanda(params, windows):
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        recipe = Recipe(method=method, sparsity=0.6)
        result = prune(MODEL, params, windows, recipe, progress=False, errors=True)
        if method == "magnitude":
            continue
        errors[method] = np.mean([v["rel_error"] for v in result.report["layers"].values()])
    assert errors["sparsegpt"] < errors["wanda"]


def test_report_has_error_sparsity_and_time_for_every_linear(params, windows):
    result = prune(
        MODEL, params, windows, Recipe(method="sparsegpt", sparsity="2:4"), progress=False
    )
    report = result.report
    assert len(report["layers"]) == CONFIG.num_hidden_layers * len(LINEARS)
    for entry in report["layers"].values():
        assert entry["sparsity"] == pytest.approx(0.5)
        assert 0.0 <= entry["rel_error"] < 1.0
        assert entry["seconds"] >= 0.0
    assert report["overall_sparsity"] == pytest.approx(0.5)
    assert report["calib_windows"] == 6 and report["seqlen"] == 16


def test_true_sequential_differs_but_is_valid_and_deterministic(params, windows):
    recipe = Recipe(method="sparsegpt", sparsity=0.5, true_sequential=True)
    a = prune(MODEL, params, windows, recipe, progress=False)
    b = prune(MODEL, params, windows, recipe, progress=False)
    plain = prune(MODEL, params, windows, Recipe(method="sparsegpt", sparsity=0.5), progress=False)
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    # Block 0's q/k/v see the same (embedding) inputs either way; o_proj sees pruned-q/k/v inputs.
    np.testing.assert_allclose(
        kernel(a.params, 0, "self_attn/q_proj"),
        kernel(plain.params, 0, "self_attn/q_proj"),
        atol=1e-6,
    )
    assert not np.allclose(
        kernel(a.params, 0, "self_attn/o_proj"), kernel(plain.params, 0, "self_attn/o_proj")
    )
    assert a.report["overall_sparsity"] == pytest.approx(0.5)


def test_owl_spreads_block_sparsity_and_keeps_the_overall_target(params, windows):
    result = prune(
        MODEL,
        params,
        windows,
        Recipe(method="wanda", sparsity=0.5, allocation="owl", owl_lambda=0.1),
        progress=False,
    )
    layers = result.report["layers"]
    targets = {p: e["target_sparsity"] for p, e in layers.items()}
    per_block = {int(p.split("/")[1]): s for p, s in targets.items()}
    assert len(set(per_block.values())) == CONFIG.num_hidden_layers  # one target per block
    assert max(abs(s - 0.5) for s in per_block.values()) <= 0.1 + 1e-9
    sizes = {p: paths.get_leaf(params, p).size for p in targets}
    weighted = sum(targets[p] * sizes[p] for p in targets) / sum(sizes.values())
    assert weighted == pytest.approx(0.5, abs=1e-9)
    owl = result.report["owl"]
    assert owl["block_sparsity"] == per_block
    ratios = owl["outlier_ratio"]
    assert sorted(ratios) == sorted(per_block) and all(0 <= r <= 1 for r in ratios.values())
    # More outliers, lower sparsity (OWL's rule).
    by_ratio = sorted(per_block, key=ratios.get)
    assert [per_block[b] for b in by_ratio] == sorted(per_block.values(), reverse=True)
    for path, entry in layers.items():  # realised: ⌊s·in⌋ per output column
        d_in = paths.get_leaf(params, path).shape[0]
        assert entry["sparsity"] == pytest.approx(np.floor(targets[path] * d_in) / d_in)


def test_calibrated_method_without_windows_is_a_clear_error(params):
    with pytest.raises(ValueError, match="calibration windows"):
        prune(MODEL, params, None, Recipe(method="wanda"), progress=False)


def test_targets_matching_nothing_is_a_clear_error(params, windows):
    with pytest.raises(ValueError, match="nothing|match"):
        prune(
            MODEL, params, windows, Recipe(method="wanda", targets=("no/such/.*",)), progress=False
        )


def test_input_params_are_not_modified(params, windows):
    before = jax.tree.map(np.array, params)
    prune(MODEL, params, windows, Recipe(method="sparsegpt", sparsity=0.5), progress=False)
    jax.tree.map(np.testing.assert_array_equal, before, params)


def test_sparsellm_prunes_attention_like_sparsegpt_and_solves_the_mlp_jointly(params, windows):
    recipe = Recipe(method="sparsellm", sparsity=0.7, method_options={"iterations": 3})
    joint = prune(MODEL, params, windows, recipe, progress=False)
    plain = prune(MODEL, params, windows, Recipe(method="sparsegpt", sparsity=0.7), progress=False)
    # Block 0 sees identical inputs in both runs, and attention is SparseGPT in both.
    for name in LINEARS[:4]:
        np.testing.assert_allclose(
            kernel(joint.params, 0, name), kernel(plain.params, 0, name), atol=1e-6
        )
    report = joint.report["joint_mlp"]
    assert sorted(report) == ["layers/0/mlp", "layers/1/mlp"]
    for entry in report.values():
        assert len(entry["objective"]) == 3 and np.all(np.isfinite(entry["objective"]))
    for path, entry in joint.report["layers"].items():
        assert entry["sparsity"] == pytest.approx(0.7, abs=0.02), path
        assert np.isfinite(entry["rel_error"])
        keep = np.asarray(paths.get_leaf(joint.masks, path))
        assert not np.any(np.asarray(paths.get_leaf(joint.params, path))[~keep])


def test_sparsellm_on_opt_with_biases_is_exact_and_finite():
    from jaxprune.models.opt import OPTConfig

    config = OPTConfig(
        vocab_size=64,
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=32,
    )
    model = LanguageModel(config)
    params = model.init_params(1)
    params = jax.tree.map(lambda x: x + 0.05, params)  # non-zero biases
    windows = np.random.default_rng(1).integers(0, 64, (4, 16), dtype=np.int32)
    result = prune(
        model,
        params,
        windows,
        Recipe(method="sparsellm", sparsity=0.6, method_options={"iterations": 3}),
        progress=False,
    )
    assert result.report["overall_sparsity"] == pytest.approx(0.6, abs=0.02)
    for block in range(2):
        bias = paths.get_leaf(result.params, f"layers/{block}/fc1/bias")
        assert np.isfinite(np.asarray(bias)).all()
    logits = model.logits(result.params, jnp.asarray(windows))
    assert np.isfinite(np.asarray(logits)).all()


def test_owl_with_magnitude_uses_the_calibration_only_for_the_allocation(params, windows):
    recipe = Recipe(method="magnitude", sparsity=0.6, allocation="owl")
    with pytest.raises(ValueError, match="allocation 'owl' needs calibration windows"):
        prune(MODEL, params, None, recipe, progress=False)
    head_only = replace(recipe, targets=("lm_head/kernel",))
    with pytest.raises(ValueError, match="no target is a linear of a decoder block"):
        prune(MODEL, params, windows, head_only, progress=False)
    result = prune(MODEL, params, windows, recipe, progress=False)
    wanda = prune(MODEL, params, windows, replace(recipe, method="wanda"), progress=False)
    # Same outlier pass whatever the method, so the same block sparsities.
    assert result.report["owl"] == wanda.report["owl"]
    spread = set(result.report["owl"]["block_sparsity"].values())
    assert len(spread) > 1
    for path, entry in result.report["layers"].items():
        block = int(path.split("/")[1])
        assert entry["target_sparsity"] == pytest.approx(
            result.report["owl"]["block_sparsity"][block]
        )
        dense = np.abs(np.asarray(paths.get_leaf(params, path)))
        keep = np.asarray(paths.get_leaf(result.masks, path))
        # Still magnitude: in each kernel no pruned weight outweighs a kept one.
        assert np.where(keep, dense, np.inf).min() >= np.where(keep, -np.inf, dense).max()
    assert result.report["overall_sparsity"] == pytest.approx(0.6, abs=2e-3)


@pytest.mark.parametrize(
    ("method", "errors", "expected"),
    [
        ("sparsegpt", None, True),  # from the Hessian, free
        ("sparsegpt", False, False),
        ("wanda", None, False),  # would cost extra matrix products on the next pass
        ("wanda", True, True),
        ("sparsellm", None, True),  # attention from the Hessian, the MLP on the next pass
    ],
)
def test_which_errors_are_reported(params, windows, method, errors, expected):
    recipe = Recipe(
        method=method,
        sparsity=0.5,
        method_options=({"iterations": 2} if method == "sparsellm" else {}),
    )
    result = prune(MODEL, params, windows, recipe, progress=False, errors=errors)
    has = ["rel_error" in entry for entry in result.report["layers"].values()]
    assert all(h == expected for h in has)
    if expected:
        assert all(0.0 <= e["rel_error"] < 1.0 for e in result.report["layers"].values())


def test_hessian_errors_equal_errors_measured_on_the_same_inputs():
    from jaxprune.engine.block import hessian_rel_error

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 24)).astype(np.float32) * rng.lognormal(0, 1, 24).astype(np.float32)
    w = rng.normal(size=(24, 10)).astype(np.float32)
    pruned = np.where(rng.random(w.shape) < 0.5, 0.0, w).astype(np.float32)
    h = 2.0 / len(x) * x.astype(np.float64).T @ x.astype(np.float64)
    want = np.sum((x @ (w - pruned)) ** 2, dtype=np.float64) / np.sum(
        (x @ w) ** 2, dtype=np.float64
    )
    got = float(hessian_rel_error(jnp.asarray(h, jnp.float32), w, pruned))
    assert got == pytest.approx(want, rel=1e-4)
