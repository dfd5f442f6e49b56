"""The method registry: lookup by name, clear errors, options."""

import numpy as np
import pytest

from jaxprune.core.sparsity import Unstructured
from jaxprune.methods import (
    PRUNING_METHODS,
    Method,
    get_method,
    magnitude,
    register_method,
    statistics,
)


def test_builtin_methods_declare_their_statistics():
    assert {"magnitude", "wanda", "sparsegpt", "sparsellm"} <= set(PRUNING_METHODS)
    assert not get_method("magnitude").needs_inputs
    assert get_method("wanda").statistics is statistics.SQ_NORMS
    assert get_method("sparsegpt").statistics is statistics.HESSIAN
    assert dict(get_method("sparsegpt").options) == {"blocksize": 128, "percdamp": 0.01}
    sparsellm = get_method("sparsellm")
    assert sparsellm.joint is not None and sparsellm.solve_sharded is not None
    assert set(sparsellm.known_options) >= {"alpha", "iterations", "blocksize", "percdamp"}


def test_unknown_name_lists_the_known_methods():
    with pytest.raises(ValueError, match=r"unknown pruning method 'sparsgpt'.*'sparsegpt'"):
        get_method("sparsgpt")


def test_register_refuses_to_replace_silently():
    method = Method("test-magnitude", magnitude.solve)
    try:
        assert register_method(method) is get_method("test-magnitude")
        with pytest.raises(ValueError, match="already registered"):
            register_method(method)
        replacement = Method("test-magnitude", magnitude.solve)
        register_method(replacement, overwrite=True)
        kernel = np.arange(1.0, 9.0, dtype=np.float32).reshape(4, 2)
        _, keep = get_method("test-magnitude").solve(kernel, None, Unstructured(0.5))
        assert np.asarray(keep).sum() == 4
    finally:
        PRUNING_METHODS.pop("test-magnitude", None)


def test_options_resolve_against_the_defaults():
    method = get_method("sparsegpt")
    assert method.resolve_options({"blocksize": 64}) == {"blocksize": 64, "percdamp": 0.01}
    with pytest.raises(ValueError, match=r"no options \['blocksiz'\].*'blocksize'"):
        method.resolve_options({"blocksiz": 64})
    with pytest.raises(TypeError):
        method.options["blocksize"] = 1


def test_a_joint_method_must_read_inputs():
    with pytest.raises(ValueError, match="joint solver needs calibration statistics"):
        Method("bad", magnitude.solve, joint=lambda unit, targets: None)


def test_sparsellm_options_split_between_its_attention_and_mlp_solvers():
    method = get_method("sparsellm")
    resolved = method.resolve_options({"alpha": 0.5, "percdamp": 0.05})
    assert method.solve_options(resolved) == {"blocksize": 128, "percdamp": 0.05}
    joint = method.joint_options_of(resolved)
    assert joint["alpha"] == 0.5 and joint["percdamp"] == 0.05 and "iterations" in joint


def test_a_refinement_composes_with_a_base_method_and_runs_in_the_engine():
    """``refined`` is the plug-in point for steps like DSnoT: base solve, then refine, with the
    extra statistics the refine step declares; the engine runs it without knowing either."""
    import jax.numpy as jnp
    from tiny_models import TINY_LLAMA

    from jaxprune.engine import prune
    from jaxprune.methods import refined
    from jaxprune.models import LanguageModel
    from jaxprune.recipes import Recipe

    seen = []

    def by_spread(dense, kernel, keep, stats, target):
        # Re-select per output by |W|·std(x) (a toy refinement with a NumPy-checkable result).
        norms, moments = stats
        seen.append((type(norms).__name__, type(moments).__name__, dense.shape))
        scores = jnp.abs(dense) * jnp.sqrt(moments.variance)[:, None]
        k = int(round(target.sparsity * dense.shape[0]))
        order = jnp.argsort(scores, axis=0, stable=True)
        new_keep = jnp.ones_like(keep).at[order[:k], jnp.arange(dense.shape[1])].set(False)
        return jnp.where(new_keep, dense, 0.0), new_keep

    method = refined(
        get_method("wanda"), by_spread, name="test-wanda+spread", statistics=statistics.MOMENTS
    )
    assert method.statistics is not statistics.SQ_NORMS and not method.options
    register_method(method)
    try:
        model = LanguageModel(TINY_LLAMA)
        params = model.init_params(0)
        windows = np.random.default_rng(0).integers(0, 64, (4, 16))
        result = prune(
            model, params, windows, Recipe(method="test-wanda+spread", sparsity=0.5), progress=False
        )
        assert len(seen) == 14 and {s[:2] for s in seen} == {("LinearStats", "Moments")}
        keep = np.asarray(result.masks["layers"][0]["mlp"]["down_proj"]["kernel"])
        assert np.all(keep.sum(axis=0) == keep.shape[0] // 2)
        kernel = np.asarray(result.params["layers"][0]["mlp"]["down_proj"]["kernel"])
        dense = np.asarray(params["layers"][0]["mlp"]["down_proj"]["kernel"])
        np.testing.assert_array_equal(kernel, np.where(keep, dense, 0.0))
    finally:
        PRUNING_METHODS.pop("test-wanda+spread", None)
