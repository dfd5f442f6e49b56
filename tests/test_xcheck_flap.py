"""The FLAP cross-check driver's own pieces: the multi-head copy of a grouped-query LLaMA is the
same function, and the head-size rewrite of the original's text is exact or refused."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def flap(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.xcheck import flap

    return flap


def test_mha_copy_of_a_grouped_query_llama_gives_the_same_logits(flap, tmp_path):
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "gqa")
    (tmp_path / "mha").mkdir()
    mha_dir = flap.make_mha(tmp_path / "mha", str(tmp_path / "gqa"))
    gqa = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "gqa").eval()
    mha = transformers.AutoModelForCausalLM.from_pretrained(mha_dir).eval()
    assert mha.config.num_key_value_heads == 4
    assert mha.model.layers[0].self_attn.k_proj.weight.shape == (32, 32)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        np.testing.assert_allclose(mha(ids).logits, gqa(ids).logits, rtol=1e-5, atol=1e-5)


def fake_checkout(root: Path, body: str) -> str:
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "__init__.py").write_text("")
    (root / "lib" / "helper.py").write_text("FROM_PACKAGE = 'relative import resolved'\n")
    (root / "lib" / "prune.py").write_text(body)
    return str(root)


ORIGINAL_TEXT = """from .helper import FROM_PACKAGE
texts = ["reshape(-1, 128)", "reshape(-1, 128)", "reshape(-1, 128)", "reshape(-1, 128)"]
texts += ["repeat_interleave(128)", "repeat_interleave(128)"]
texts += ["retain_heads * 128", "reshape(len(layers), -1, 128)"]
weight = 512.0 / 3
untouched = "nsamples=128"
"""


def test_head_literals_are_set_to_the_models_head_size_and_nothing_else(flap, tmp_path):
    repo = fake_checkout(tmp_path / "checkout", ORIGINAL_TEXT)
    try:
        prune = flap.import_prune_flap(repo, 64)
        assert prune.FROM_PACKAGE == "relative import resolved"
        assert prune.texts == ["reshape(-1, 64)"] * 4 + ["repeat_interleave(64)"] * 2 + [
            "retain_heads * 64",
            "reshape(len(layers), -1, 64)",
        ]
        assert prune.weight == pytest.approx(4 * 64 / 3) and prune.untouched == "nsamples=128"
        assert flap.import_prune_flap(repo, 128).weight == pytest.approx(512 / 3)  # unmodified
    finally:
        for name in [n for n in sys.modules if n == "lib" or n.startswith("lib.")]:
            del sys.modules[name]


def test_a_checkout_whose_text_differs_is_refused(flap, tmp_path):
    repo = fake_checkout(tmp_path / "checkout", ORIGINAL_TEXT.replace("512.0 / 3", "170.7"))
    try:
        with pytest.raises(SystemExit, match="'512.0 / 3' occurs 0×, not 1×"):
            flap.import_prune_flap(repo, 64)
    finally:
        for name in [n for n in sys.modules if n == "lib" or n.startswith("lib.")]:
            del sys.modules[name]
