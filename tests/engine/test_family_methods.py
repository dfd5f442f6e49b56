"""Every one-shot method (and OWL's allocation) on every registered family.

The families built on the LLaMA modules (Qwen2's biases, Qwen3's q/k norms, Phi-3's split fused
projections) and the two with their own (Gemma 3, OPT) go through the same engine; Wanda is
checked exactly against a NumPy computation, the others for their target and their masks.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from family_configs import FAMILY_CONFIGS
from structured_models import random_params
from wanda_reference import wanda_by_hand

from jaxprune.core import paths
from jaxprune.engine import prune
from jaxprune.methods import sparsellm_steps
from jaxprune.models import FAMILIES, LanguageModel
from jaxprune.recipes import Recipe

NAMES = sorted(FAMILY_CONFIGS)
WINDOWS = np.random.default_rng(0).integers(0, 128, (8, 12)).astype(np.int32)
RECIPES = {
    "magnitude": Recipe(method="magnitude", sparsity=0.5),
    "wanda": Recipe(method="wanda", sparsity="2:4"),
    "ria": Recipe(method="ria", sparsity=0.5),
    "sparsegpt": Recipe(method="sparsegpt", sparsity=0.5),
    "sparsellm": Recipe(method="sparsellm", sparsity=0.6, method_options={"iterations": 2}),
    "owl": Recipe(method="wanda", sparsity=0.6, allocation="owl"),
}
# The whole matrix is slow; the default run keeps the MLP records and Wanda's exact check on Phi-3.


def _model(name):
    model = LanguageModel(FAMILY_CONFIGS[name])
    return model, random_params(model)


@pytest.mark.parametrize(
    ("family", "method"),
    [pytest.param(f, m, marks=pytest.mark.slow) for f in NAMES for m in RECIPES],
)
def test_every_method_prunes_every_family(family, method):
    model, params = _model(family)
    recipe = RECIPES[method]
    result = prune(model, params, WINDOWS, recipe, progress=False)
    target = 0.5 if recipe.sparsity == "2:4" else float(recipe.sparsity)
    # Counts are floored per output column of 32–48 inputs; OWL's per-block targets floor apart.
    tolerance = 0.03 if recipe.allocation == "owl" else 0.02
    assert result.report["overall_sparsity"] == pytest.approx(target, abs=tolerance)
    assert len(result.report["layers"]) == 2 * len(FAMILIES[model.config.family].tap_of)
    for path in result.report["layers"]:
        keep = np.asarray(paths.get_leaf(result.masks, path))
        assert not np.any(np.asarray(paths.get_leaf(result.params, path))[~keep]), path
    assert np.isfinite(np.asarray(model.logits(result.params, jnp.asarray(WINDOWS)))).all()
    if method == "sparsellm":  # one joint MLP solve per block, its roles from the family record
        assert len(result.report["joint_mlp"]) == model.num_blocks


@pytest.mark.parametrize("family", NAMES)
def test_the_family_mlp_record_is_the_mlp_the_model_runs(family):
    """SparseLLM rebuilds the MLP from the record (roles, activation): it must be the real one."""
    model, params = _model(family)
    spec = FAMILIES[model.config.family].mlp
    block = model.block_params(params, 0)
    _, taps = model.block(block, model.embed(params, jnp.asarray(WINDOWS[:2])), True, 0)
    kernels = {role: paths.get_leaf(block, f"{path}/kernel") for role, path in spec.roles}
    biases = {
        role: paths.get_leaf(block, f"{path}/bias")
        for role, path in spec.roles
        if "bias" in paths.get_leaf(block, path)
    }
    x = taps[spec.in_tap].reshape(-1, taps[spec.in_tap].shape[-1])
    *_, p = sparsellm_steps.dense_variables(spec.kind, spec.activation, x, kernels, biases)
    np.testing.assert_allclose(p, taps[spec.out_tap].reshape(p.shape), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "family", [pytest.param(f, marks=() if f == "phi3" else pytest.mark.slow) for f in NAMES]
)
def test_wanda_equals_a_numpy_computation_block_by_block(family):
    model, params = _model(family)
    result = prune(model, params, WINDOWS, Recipe(method="wanda", sparsity=0.5), progress=False)
    for (i, name), keep in wanda_by_hand(model, params, WINDOWS, 0.5).items():
        got = np.asarray(paths.get_leaf(result.masks, f"layers/{i}/{name}/kernel"))
        assert np.mean(got == keep) > 0.99, (i, name)
