"""Evaluation windows never depend on the calibration length: 512 tokens unless asked otherwise."""

from __future__ import annotations

import dataclasses

import pytest
from tiny_checkpoint import CONFIG, tiny_tokenizer, write_corpus

from jaxprune import pipeline
from jaxprune.models import LanguageModel
from jaxprune.models.loaders import Pretrained
from jaxprune.recipes import Recipe
from jaxprune.structured import StructuredRecipe

LONG = dataclasses.replace(CONFIG, max_position_embeddings=1024)


@pytest.fixture(scope="module")
def pretrained():
    model = LanguageModel(LONG)
    return Pretrained(model, model.init_params(0), tiny_tokenizer(), "tiny")


@pytest.mark.parametrize(
    "recipe",
    [
        StructuredRecipe(method="llm-pruner", sparsity=0.2),  # calibrates on 10 x 64
        Recipe(method="wanda", sparsity=0.5, nsamples=2, seqlen=64),
    ],
    ids=["llm-pruner", "wanda-64"],
)
def test_eval_windows_are_512_tokens_whatever_the_calibration_length(pretrained, recipe, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    recipe = dataclasses.replace(recipe, calib=str(corpus))
    job = pipeline.prepare(pretrained, recipe, eval_source=corpus, eval_nsamples=2)
    assert job.calibration.shape[1] == 64
    assert job.eval_windows.shape == (2, 512)
    shorter = pipeline.prepare(
        pretrained, recipe, eval_source=corpus, eval_nsamples=2, eval_seqlen=128
    )
    assert shorter.eval_windows.shape == (2, 128)
