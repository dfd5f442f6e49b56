"""Structured prunes show progress bars on stderr, as the one-shot engine does."""

from __future__ import annotations

import pytest
from structured_models import TINY_GQA, random_params, windows

from jaxprune.models import LanguageModel
from jaxprune.structured import StructuredRecipe, prune_structured

MODEL = LanguageModel(TINY_GQA)


@pytest.mark.parametrize(
    ("method", "bar"), [("flap", "flap statistics"), ("llm-pruner", "llm-pruner gradients")]
)
def test_the_slow_pass_of_a_structured_prune_has_a_progress_bar(method, bar, capsys):
    recipe = StructuredRecipe(method=method, sparsity=0.2, nsamples=4, seqlen=12, batch_size=2)
    prune_structured(MODEL, random_params(MODEL), windows(), recipe)
    err = capsys.readouterr().err
    assert bar in err
    prune_structured(MODEL, random_params(MODEL), windows(), recipe, progress=False)
    assert capsys.readouterr().err == ""
