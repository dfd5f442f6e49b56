"""LLM-Pruner and FLAP at 20% on every family: the shrunk model computes what the masked model
computes, reloads as itself, and (widths uniform) exports to a model transformers runs alike.

Gemma 3 (q/k norms, sliding and global blocks, tied embeddings), Qwen2 (q/k/v biases leave with
their channels), Qwen3 (its shared q/k norms stay whole), Phi-3 (split fused projections, fused
again on export) and OPT (biases; transformers' OPT cannot hold removed heads).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from family_configs import FAMILY_CONFIGS
from structured_models import random_params

from jaxprune.core.paths import leaf_paths
from jaxprune.models import LanguageModel
from jaxprune.models.export import export_hf
from jaxprune.models.loaders import Pretrained, load_pretrained, save_pruned
from jaxprune.structured import BlockKeep, StructuredRecipe, prune_structured, shrink, zero_groups

WINDOWS = np.random.default_rng(0).integers(0, 128, (4, 12)).astype(np.int32)
NAMES = sorted(FAMILY_CONFIGS)
FAST = {("gemma3", "flap")}  # the default run; the other cases are slow
CASES = [
    pytest.param(f, m, marks=() if (f, m) in FAST else pytest.mark.slow)
    for f in NAMES
    for m in ("llm-pruner", "flap")
]


def _logits(model, params) -> np.ndarray:
    return np.asarray(model.logits(params, jnp.asarray(WINDOWS)))


def _masked(model, params, result):
    """The dense-width model with the removed groups zeroed and FLAP's biases (if any) added."""
    config = result.model.config
    if config.with_output_biases() == config:  # the output projections' biases: the shrunk ones
        model = LanguageModel(model.config.with_output_biases())
        have = dict(zip(leaf_paths(params), jax.tree.leaves(params), strict=True))
        shrunk = dict(zip(leaf_paths(result.params), jax.tree.leaves(result.params), strict=True))
        abstract = jax.eval_shape(lambda: model.init_params(0))
        structure = model.family.structure
        outs = (f"{structure.attn_out}/bias", f"{structure.mlp_out}/bias")

        def leaf(path, spec):
            if path.endswith(outs):
                return shrunk[path]  # the output projections' biases are not sliced
            return have.get(path, jnp.zeros(spec.shape, spec.dtype))

        paths = iter(leaf_paths(abstract))
        params = jax.tree.map(lambda spec: leaf(next(paths), spec), abstract)
    return model, zero_groups(model, params, result.keeps)


def _prune(family, method, **options):
    model = LanguageModel(FAMILY_CONFIGS[family])
    params = random_params(model)
    recipe = StructuredRecipe(
        method=method, sparsity=0.2, nsamples=4, seqlen=12, block_range=(0, 2), **options
    )
    return model, params, prune_structured(model, params, WINDOWS, recipe)


@pytest.mark.parametrize(("family", "method"), CASES)
def test_shrunk_model_computes_the_masked_model_and_reloads(family, method, tmp_path):
    model, params, result = _prune(family, method)
    assert result.report["params_after"] < 0.85 * result.report["params_before"]
    shrunk = _logits(result.model, result.params)
    np.testing.assert_allclose(shrunk, _logits(*_masked(model, params, result)), atol=2e-5)
    save_pruned(
        tmp_path / "m", Pretrained(result.model, result.params, None, family), result.params
    )
    again = load_pretrained(tmp_path / "m")
    assert again.model.config == result.model.config
    np.testing.assert_array_equal(_logits(again.model, again.params), shrunk)


def _uniform(keeps):
    """The same keeps with every block cut to the narrowest block's widths (per-block allocation
    may leave one block a channel wider than another after rounding)."""
    heads = min(len(k.heads) for k in keeps.values())
    kv_heads = min(len(k.kv_heads) for k in keeps.values())
    mlp = min(len(k.mlp) for k in keeps.values())
    assert all(len(k.heads) == heads and len(k.kv_heads) == kv_heads for k in keeps.values())
    return {i: BlockKeep(k.heads, k.kv_heads, k.mlp[:mlp]) for i, k in keeps.items()}


@pytest.mark.parametrize(("family", "method"), CASES)
def test_uniformly_shrunk_models_export_to_transformers(family, method, tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    options = {"allocation": "per-block", "bias_compensation": False} if method == "flap" else {}
    model, params, result = _prune(family, method, **options)
    smaller, small_params = shrink(model, params, _uniform(result.keeps))
    heads = smaller.config.layer_widths(0).heads
    if family == "opt" and heads < FAMILY_CONFIGS["opt"].num_attention_heads:
        with pytest.raises(ValueError, match="cannot hold a model whose attention heads"):
            export_hf(tmp_path / "hf", smaller, small_params)
        return
    export_hf(tmp_path / "hf", smaller, small_params)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").float().eval()
    with torch.no_grad():
        theirs = exported(torch.as_tensor(WINDOWS)).logits.numpy()
    ours = _logits(smaller, small_params)
    assert np.abs(ours - theirs).max() < 1e-4 * np.abs(theirs).max()


def test_flap_biases_on_a_family_transformers_cannot_hold_are_refused_before_writing(tmp_path):
    _, _, result = _prune("gemma3", "flap")
    with pytest.raises(ValueError, match="Gemma 3 MLP has no biases.*--no-bias-compensation"):
        export_hf(tmp_path / "hf", result.model, result.params)
    assert not list(tmp_path.iterdir())
