"""Recipes: YAML/JSON round trips and validation before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from jaxprune.core.sparsity import NM, Unstructured
from jaxprune.recipes import Recipe

EXAMPLE = Path(__file__).parent.parent / "examples" / "owl_sparsegpt_70.yaml"


def test_the_example_recipe_loads_and_validates():
    recipe = Recipe.load(EXAMPLE).validate()
    assert recipe.method == "sparsegpt"
    assert recipe.target == Unstructured(0.7)
    assert recipe.allocation == "owl"
    assert recipe.ignore == ("layers/0/.*",)
    assert recipe.options == {"percdamp": 0.01, "blocksize": 128}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_then_load_is_identity(tmp_path, suffix):
    recipe = Recipe(
        method="wanda",
        sparsity="2:4",
        targets=[r"layers/\d+/mlp/.*"],
        overrides={r"layers/0/mlp/down_proj/kernel": 0.3},
        nsamples=16,
    )
    path = tmp_path / f"r{suffix}"
    if suffix == ".yaml":
        recipe.save(path)
    else:
        import json

        path.write_text(json.dumps(recipe.to_dict()))
    again = Recipe.load(path)
    assert again == recipe
    assert again.target == NM(2, 4)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": "obc"}, "unknown pruning method"),
        ({"sparsity": 1.5}, r"\[0, 1\)"),
        ({"sparsity": "5:4"}, "0 < N < M"),
        ({"allocation": "erk"}, "unknown allocation"),
        ({"allocation": "owl", "sparsity": "2:4"}, "N:M pattern"),
        ({"owl_lambda": 1.5}, "owl_lambda"),
        ({"nsamples": 0}, "nsamples must be a positive integer"),
        ({"targets": ["layers/("]}, "invalid path regex"),
        ({"overrides": {"x": "nonsense"}}, "cannot read sparsity"),
        ({"method": "sparsegpt", "method_options": {"dampening": 0.1}}, "has no options"),
    ],
)
def test_invalid_fields_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**fields).validate()


def test_unknown_fields_and_missing_files_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown recipe fields"):
        Recipe.from_dict({"method": "wanda", "sparsty": 0.5})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Recipe.load(tmp_path / "missing.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        Recipe.load(bad)
