"""Recovery does what it promises: float32 masters for a bfloat16 model, the same (masked) model
at every held-out point, exact zeros of a mask-less sparse model kept, a time estimate."""

from __future__ import annotations

import importlib
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_recover import MODEL, data, pruned, small

from jaxprune.checkpoint import load_checkpoint
from jaxprune.core.paths import get_leaf, set_leaves
from jaxprune.training.lora import LoraConfig
from jaxprune.training.recover import recover
from jaxprune.training.zero_masks import zero_masks

recover_module = importlib.import_module("jaxprune.training.recover")


@pytest.mark.parametrize("method", ["lora", "masked"])
def test_a_bfloat16_model_trains_float32_master_weights(method, tmp_path):
    params, masks = pruned()
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    config = small(method, steps=2, save_every=1, lora=LoraConfig(rank=2, alpha=4.0))
    result = recover(
        MODEL, params, data(), config, masks=masks, checkpoint_dir=tmp_path, progress=False
    )
    trained = load_checkpoint(tmp_path).params["trained"]
    assert {np.asarray(x).dtype for x in jax.tree.leaves(trained)} == {np.dtype(np.float32)}
    assert {x.dtype for x in jax.tree.leaves(result.params)} == {jnp.dtype(jnp.bfloat16)}


def test_every_held_out_point_measures_the_model_that_is_returned(monkeypatch):
    params, masks = pruned()
    seen = []

    def spy(model, evaluated, windows, **kw):
        seen.append(evaluated)
        return real(model, evaluated, windows, **kw)

    real = recover_module.perplexity
    monkeypatch.setattr(recover_module, "perplexity", spy)
    config = small("lora", steps=3, eval_every=1, lora=LoraConfig(rank=2, alpha=4.0))
    result = recover(
        MODEL, params, data(), config, masks=masks, eval_windows=data(2, seed=5), progress=False
    )
    assert [step for step, _ in result.report["eval"]] == [0, 1, 2, 3]
    assert len(seen) == 4 and "eval_unmerged" not in result.report
    for evaluated in seen:  # every point keeps the masks, as the returned merge does
        for path, keep in masks.items():
            assert not np.asarray(get_leaf(evaluated, path))[~np.asarray(keep)].any(), path


def test_exact_zeros_of_a_sparse_model_without_masks_become_masks():
    params, masks = pruned()
    sparse = set_leaves(params, {p: jnp.where(m, get_leaf(params, p), 0) for p, m in masks.items()})
    found = zero_masks(MODEL, sparse)
    assert set(found) == set(masks)
    for path, keep in masks.items():
        np.testing.assert_array_equal(np.asarray(found[path]), np.asarray(keep))
    assert zero_masks(MODEL, params) is None  # a dense model has no such zeros
    few = set_leaves(params, {p: get_leaf(params, p).at[0, 0].set(0) for p in masks})
    assert zero_masks(MODEL, few) is None  # a stray zero is not a pruned model


def test_an_estimated_total_time_is_logged_after_the_first_steps(caplog):
    params, _ = pruned()
    with caplog.at_level(logging.INFO, logger="jaxprune"):
        recover(MODEL, params, data(), small("masked", steps=4), progress=False)
    assert any("estimated total" in r.getMessage() for r in caplog.records)


def test_a_sparse_model_saved_without_masks_recovers_keeping_its_zeros(tmp_path, caplog):
    from tiny_checkpoint import CONFIG, tiny_tokenizer, write_corpus

    from jaxprune.models import LanguageModel
    from jaxprune.models.loaders import Pretrained, save_pruned
    from jaxprune.pipeline import recover_pretrained
    from jaxprune.training.recover import RecoverConfig

    model = LanguageModel(CONFIG)
    params = model.init_params(0)
    paths = [p for p in zero_masks(model, jax.tree.map(jnp.zeros_like, params))]
    sparse = set_leaves(params, {p: get_leaf(params, p).at[::2].set(0) for p in paths})
    save_pruned(tmp_path / "sparse", Pretrained(model, sparse, tiny_tokenizer(), "t"), sparse)
    config = RecoverConfig(method="masked", steps=2, batch_size=2, learning_rate=1e-2)
    with caplog.at_level(logging.INFO, logger="jaxprune"):
        result = recover_pretrained(
            tmp_path / "sparse",
            write_corpus(tmp_path / "c.txt"),
            config,
            seqlen=16,
            eval_source=None,
            progress=False,
        )
    assert any("keeping those zeros as masks" in r.getMessage() for r in caplog.records)
    for path in paths:
        assert not np.asarray(get_leaf(result.params, path))[::2].any(), path
        assert np.asarray(get_leaf(result.params, path))[1::2].any(), path


def test_recover_help_shows_every_default_and_model_is_required(capsys):
    from jaxprune import cli

    with pytest.raises(SystemExit):
        cli.main(["recover", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in (
        "windows per micro-batch (default 8)",
        "tokens per window (default 256)",
        "LoRA rank (default 8)",
        "(default 16)",
        "optimizer steps (default 200)",
    ):
        assert default in text, default
    options = text[text.index("options:") :]
    model = options[options.index("--model MODEL") : options.index("--data DATA")]
    assert "required" in model and "default" not in model
    assert "42-58 s" in text  # what a CPU step costs
