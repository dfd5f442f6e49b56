"""PEFT adapters: peft loads ours onto the exported base and gives our unmerged model's logits."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from tiny_models import TINY_LLAMA
from transformers import AutoModelForCausalLM

from jaxprune.models import LanguageModel
from jaxprune.models.export import export_hf
from jaxprune.training.lora import LoraConfig, init_lora, lora_logits
from jaxprune.training.lora_peft import save_peft

peft = pytest.importorskip("peft")

MODEL = LanguageModel(TINY_LLAMA)
TOKENS = np.random.default_rng(0).integers(0, 64, size=(2, 12))


def trained_adapters(params, config):
    """Adapters with B random too (a fresh B is zero, which would hide a transposed A or B)."""
    lora = init_lora(MODEL, params, config, jax.random.key(0))
    keys = iter(jax.random.split(jax.random.key(1), 64))
    return jax.tree.map(lambda x: x + 0.3 * jax.random.normal(next(keys), x.shape), lora)


def scaled_params():
    params = MODEL.init_params(0)
    return jax.tree.map(lambda x: x * 25.0 / x.shape[0] ** 0.5 if x.ndim == 2 else x, params)


@pytest.mark.parametrize(
    "targets", [None, pytest.param(r"layers/1/mlp/(gate|down)_proj/kernel", marks=pytest.mark.slow)]
)
def test_peft_on_the_exported_base_gives_our_unmerged_logits(tmp_path, targets):
    params = scaled_params()
    config = LoraConfig(rank=4, alpha=8.0, targets=targets)
    lora = trained_adapters(params, config)
    export_hf(tmp_path / "base", MODEL, params)
    summary = save_peft(tmp_path / "lora", MODEL, lora, config, base_model=str(tmp_path / "base"))
    written = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert written["r"] == 4 and written["lora_alpha"] == 8.0
    assert summary["tensors"] == 2 * (14 if targets is None else 2)
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    tuned = peft.PeftModel.from_pretrained(base, tmp_path / "lora").eval()
    with torch.no_grad():
        theirs = tuned(torch.as_tensor(TOKENS)).logits.numpy()
    ours = np.asarray(lora_logits(MODEL, params, lora, jnp.asarray(TOKENS), config))
    plain = np.asarray(MODEL.logits(params, jnp.asarray(TOKENS)))
    assert np.abs(ours - plain).max() > 0.1  # the adapters change the logits
    np.testing.assert_allclose(theirs, ours, atol=1e-4)


def test_adapters_of_other_families_and_existing_directories_are_refused(tmp_path):
    from jaxprune.training.lora_peft import module_name

    assert module_name("layers/3/mlp/up_proj/kernel") == "model.layers.3.mlp.up_proj"
    assert module_name("lm_head/kernel") == "lm_head"
    (tmp_path / "x").mkdir()
    params = MODEL.init_params(0)
    config = LoraConfig()
    with pytest.raises(ValueError, match="exists; choose a new directory"):
        save_peft(
            tmp_path / "x", MODEL, init_lora(MODEL, params, config, jax.random.key(0)), config
        )


@pytest.mark.slow  # two recovery runs (compiles a training step)
def test_recover_save_adapters_writes_peft_files_next_to_the_model(capsys, tmp_path):
    from tiny_checkpoint import save_tiny_model, write_corpus

    from jaxprune.cli import main

    model_dir = save_tiny_model(tmp_path / "tiny")
    text = write_corpus(tmp_path / "train.txt")
    common = ["recover", "--model", str(model_dir), "--data", str(text), "--eval", str(text)]
    args = ["--steps", "2", "--batch-size", "2", "--seqlen", "16", "--eval-nsamples", "2"]
    args += ["--out", str(tmp_path / "out")]
    masked = [*common, "--method", "masked", *args, "--save-adapters", str(tmp_path / "a")]
    assert main(masked) == 2
    assert "--save-adapters needs --method lora" in capsys.readouterr().err
    assert main([*common, *args, "--save-adapters", str(tmp_path / "a")]) == 0
    assert "PEFT adapters saved to" in capsys.readouterr().out
    written = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert written["peft_type"] == "LORA" and len(written["target_modules"]) == 14
    assert (tmp_path / "a" / "adapter_model.safetensors").exists()
    again = [*common, *args[:-1], str(tmp_path / "out2"), "--save-adapters", str(tmp_path / "a")]
    assert main(again) == 2
    assert "--save-adapters" in capsys.readouterr().err and not (tmp_path / "out2").exists()
