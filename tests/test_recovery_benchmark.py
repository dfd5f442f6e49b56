"""The recovery benchmark's configurations: one-shot entries keep masks, structured ones shrink."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
from tiny_models import TINY_LLAMA

from jaxprune.models import LanguageModel
from jaxprune.models.loaders import Pretrained
from jaxprune.structured import count_params

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recovery.py"


def load_benchmark():
    if str(SCRIPT.parent) not in sys.path:  # as when run as a script: it imports benchmarks/_common
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("recovery_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny():
    model = LanguageModel(TINY_LLAMA)
    calib = np.random.default_rng(0).integers(0, TINY_LLAMA.vocab_size, (4, 16))
    return Pretrained(model, model.init_params(0), None, "tiny"), calib


def test_a_one_shot_entry_keeps_the_model_and_returns_its_n_m_masks():
    bench = load_benchmark()
    pre, calib = tiny()
    args = argparse.Namespace(calib_nsamples=4)
    model, params, masks = bench.prune_config("sparsegpt:2:4", pre, calib, args)
    assert model is pre and masks is not None
    up = np.asarray(params["layers"][0]["mlp"]["up_proj"]["kernel"])
    # 2:4 along the input dimension: two zeros in every group of four inputs of each output.
    groups = (up.T.reshape(up.shape[1], -1, 4) == 0).sum(-1)
    assert (groups >= 2).all()


def test_a_structured_entry_returns_a_smaller_model_without_masks():
    bench = load_benchmark()
    pre, calib = tiny()
    model, params, masks = bench.prune_config("flap:0.25", pre, calib, argparse.Namespace())
    assert masks is None and model.source == "flap:0.25"
    before, after = count_params(pre.model), count_params(model.model, params)
    assert after < before
    assert abs(1 - after / before - 0.25) < 0.1


def test_the_dense_control_is_the_dense_model_without_masks():
    bench = load_benchmark()
    pre, calib = tiny()
    model, params, masks = bench.prune_config("dense", pre, calib, argparse.Namespace())
    assert model is pre and params is pre.params and masks is None
