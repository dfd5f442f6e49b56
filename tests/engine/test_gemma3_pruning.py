"""Every one-shot method on a tiny random Gemma 3, whose blocks differ by position.

The calibration windows are four sliding windows long, so a block run with the wrong attention
kind (a wrong or missing index in the engine) would change every later block's inputs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from wanda_reference import wanda_by_hand

from jaxprune.core import paths
from jaxprune.engine import prune
from jaxprune.methods import PRUNING_METHODS, sparsellm_steps
from jaxprune.models import FAMILIES, Gemma3Config, LanguageModel
from jaxprune.recipes import Recipe

CONFIG = Gemma3Config(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=16,
    sliding_window=4,
    layer_types=("sliding_attention", "full_attention", "sliding_attention"),
    rope_theta=5000.0,
    rope_local_base_freq=100.0,
)
MODEL = LanguageModel(CONFIG)
TAP_OF = FAMILIES["gemma3"].tap_of


@pytest.fixture(scope="module")
def params():
    """Random params with non-trivial (1 + w) norm scales and O(1) activations."""
    leaves, tree = jax.tree.flatten(MODEL.init_params(0))
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [
        leaf + 0.3 * jax.random.normal(k, leaf.shape) if leaf.ndim == 1 else leaf * 10.0
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(tree, noisy)


@pytest.fixture(scope="module")
def windows():
    return np.random.default_rng(0).integers(0, CONFIG.vocab_size, (8, 16), dtype=np.int32)


def test_wanda_engine_matches_a_hand_run_with_per_block_attention(params, windows):
    result = prune(MODEL, params, windows, Recipe(method="wanda", sparsity=0.5), progress=False)
    for (block, name), keep in wanda_by_hand(MODEL, params, windows, 0.5).items():
        got = np.asarray(paths.get_leaf(result.masks, f"layers/{block}/{name}/kernel"))
        assert np.mean(got == keep) > 0.99, (block, name)


@pytest.mark.parametrize(
    ("method", "target", "allocation"),
    [(m, t, "uniform") for m in sorted(PRUNING_METHODS) for t in ("0.6", "2:4")]
    + [("sparsegpt", "0.7", "owl"), ("wanda", "0.7", "owl")],
)
def test_every_method_prunes_gemma3(params, windows, method, target, allocation):
    recipe = Recipe(
        method=method,
        sparsity=target,
        allocation=allocation,
        method_options={"iterations": 2} if method == "sparsellm" else {},
    )
    # errors=True: the propagate pass measures every layer's output error, also for the methods
    # without a Hessian (Wanda, RIA), which report none by default.
    result = prune(MODEL, params, windows, recipe, progress=False, errors=True)
    expected = 0.5 if target == "2:4" else float(target)
    assert result.report["overall_sparsity"] == pytest.approx(expected, abs=0.02)
    assert len(result.report["layers"]) == CONFIG.num_hidden_layers * len(TAP_OF)
    for path, entry in result.report["layers"].items():
        keep = np.asarray(paths.get_leaf(result.masks, path))
        assert not np.any(np.asarray(paths.get_leaf(result.params, path))[~keep]), path
        if method != "magnitude":
            assert 0.0 <= entry["rel_error"] < 1.5, path
    assert np.isfinite(np.asarray(MODEL.logits(result.params, jnp.asarray(windows)))).all()
    if method == "sparsellm":
        assert sorted(result.report["joint_mlp"]) == [f"layers/{i}/mlp" for i in range(3)]


def test_the_declared_activation_is_the_one_the_model_runs(params, windows):
    """SparseLLM rebuilds the MLP from the family's MlpSpec; it must equal the NNX MLP."""
    spec = FAMILIES["gemma3"].mlp
    assert (spec.kind, spec.activation) == ("gated", "gelu_tanh")
    hidden = MODEL.embed(params, jnp.asarray(windows))
    bp = MODEL.block_params(params, 0)
    _, taps = MODEL.block(bp, hidden, capture=True, index=0)
    kernels = {role: paths.get_leaf(bp, f"{path}/kernel") for role, path in spec.roles}
    x = taps[spec.in_tap].reshape(-1, CONFIG.hidden_size)
    *_, p = sparsellm_steps.dense_variables(spec.kind, spec.activation, x, kernels, {})
    expected = taps[spec.out_tap].reshape(p.shape)
    np.testing.assert_allclose(np.asarray(p), np.asarray(expected), rtol=1e-5, atol=1e-5)
    wrong = sparsellm_steps.dense_variables(spec.kind, "silu", x, kernels, {})[2]
    assert np.abs(np.asarray(wrong) - np.asarray(expected)).max() > 1e-2


def test_sparsellm_lowers_the_gemma3_mlp_error_below_sparsegpt(params, windows):
    recipe = Recipe(method="sparsellm", sparsity=0.8, method_options={"iterations": 4})
    result = prune(MODEL, params, windows, recipe, progress=False)
    for name, entry in result.report["joint_mlp"].items():
        errors = entry["output_error"]  # iterate 0 is per-layer SparseGPT
        assert np.all(np.isfinite(errors)), name
        assert min(errors) < 0.95 * errors[0], (name, errors)
