"""`--calib random`: seeded random token windows within the vocabulary, no tokenizer needed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_models import TINY_LLAMA

from jaxprune.cli import main
from jaxprune.data import load_windows, random_token_windows
from jaxprune.models import LanguageModel
from jaxprune.models.loaders import Pretrained, save_pruned


def test_random_windows_are_seeded_and_within_the_vocabulary():
    a = load_windows("random", None, nsamples=64, seqlen=16, seed=3, vocab_size=10)
    assert a.shape == (64, 16) and a.dtype == np.int32
    assert a.min() == 0 and a.max() == 9
    np.testing.assert_array_equal(a, random_token_windows(10, 64, 16, seed=3))
    assert not np.array_equal(a, random_token_windows(10, 64, 16, seed=4))


def test_random_windows_are_for_calibration_only():
    with pytest.raises(ValueError, match="calibration only"):
        load_windows("random", None, nsamples=4, seqlen=8, split="eval", vocab_size=10)


def test_a_model_without_tokenizer_prunes_from_the_cli_on_random_windows(tmp_path):
    model = LanguageModel(TINY_LLAMA)
    params = model.init_params(0)
    save_pruned(tmp_path / "m", Pretrained(model, params, None, "tiny"), params)
    args = ["prune", "--model", str(tmp_path / "m"), "--method", "wanda", "--sparsity", "0.5"]
    args += ["--calib", "random", "--nsamples", "2", "--seqlen", "8", "--seed", "5"]
    assert main([*args, "--out", str(tmp_path / "p"), "--json"]) == 0
    recipe = json.loads((tmp_path / "p" / "recipe.json").read_text())
    want = {"source": "random", "windows": 2, "seqlen": 8, "seed": 5, "bos": False}
    assert recipe["calibration"] == want
