"""The cross-check drivers' shared pieces: layers called the originals' way still see RoPE/masks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "xcheck" / "_protocol.py"
spec = importlib.util.spec_from_file_location("xcheck_protocol", PATH)
protocol = importlib.util.module_from_spec(spec)
spec.loader.exec_module(protocol)


def tiny_llama():
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_a_layer_called_with_only_mask_and_positions_matches_the_models_own_forward():
    model, window = tiny_llama(), np.arange(16) % 64
    seen = {}
    handle = model.model.layers[1].register_forward_hook(
        lambda _m, args, out: seen.update(
            inp=args[0], out=out[0] if isinstance(out, tuple) else out
        )
    )
    with torch.no_grad():
        model(torch.as_tensor(window[None]))
    handle.remove()
    protocol.with_layer_context(model, window)
    with torch.no_grad():  # the originals' call: hidden states, attention_mask, position_ids
        out = model.model.layers[1](seen["inp"], attention_mask=None, position_ids=None)[0]
    protocol.without_layer_context(model)
    torch.testing.assert_close(out, seen["out"])
    assert "forward" not in model.model.layers[1].__dict__


def test_kept_rows_finds_the_surviving_rows_and_head_groups():
    dense = torch.arange(24.0).reshape(6, 4)
    assert protocol.kept_rows(dense, dense[[0, 2, 5]]) == [0, 2, 5]
    assert protocol.kept_rows(dense, dense[[2, 3]], unit=2) == [1]


def test_overlap_is_the_share_of_the_originals_kept_units_also_kept_by_ours():
    ours = [{"mlp": [0, 1, 2]}, {"mlp": [0, 3]}]
    theirs = [{"mlp": [0, 1, 3]}, {"mlp": [0, 3]}]
    assert protocol.overlap(ours, theirs, "mlp") == pytest.approx(4 / 5)


def test_an_original_loop_runs_with_layer_context_and_is_scored_on_the_pruned_model(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "cuda", torch.Tensor.cuda)  # cpu_shims patches these
    monkeypatch.setattr(torch.cuda, "synchronize", torch.cuda.synchronize)
    model, windows = tiny_llama(), np.arange(32).reshape(2, 16) % 64
    seen = []

    def prune():  # as an original loop: layers in context, then half of every linear zeroed
        seen.append("forward" in model.model.layers[0].__dict__)
        with torch.no_grad():
            for module in model.model.layers.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight[:, ::2] = 0

    theirs = protocol.original_unstructured(model, windows, windows, prune)
    assert seen == [True] and "forward" not in model.model.layers[0].__dict__
    assert theirs["sparsity"] == pytest.approx(0.5) and theirs["seconds"] > 0
    assert theirs["ppl"] == pytest.approx(protocol.torch_perplexity(model, windows)["ppl"])
    ours = {"ppl": 2 * theirs["ppl"], "sparsity": 0.5, "seconds": 1.0}
    row = protocol.comparison_row("wanda:0.5", ours, theirs)
    assert row["config"] == "wanda:0.5" and row["relative_difference"] == pytest.approx(1.0)
    assert (row["jaxprune_sparsity"], row["original_sparsity"]) == (0.5, theirs["sparsity"])


def test_hf_export_is_the_given_directory_or_a_temporary_export_removed_afterwards():
    from tiny_checkpoint import CONFIG, tiny_tokenizer

    from jaxprune.models import LanguageModel
    from jaxprune.models.loaders import Pretrained

    model = LanguageModel(CONFIG)
    pre = Pretrained(model, model.init_params(0), tiny_tokenizer(), "tiny")
    with protocol.hf_export(pre, "given/dir") as hf_dir:
        assert hf_dir == "given/dir"
    with protocol.hf_export(pre, None) as hf_dir:
        exported = Path(hf_dir)
        assert (exported / "config.json").is_file() and (exported / "model.safetensors").is_file()
    assert not exported.exists()


def test_kept_overlap_is_per_linear_share_of_the_originals_kept_weights_also_kept_by_ours():
    theirs = {
        "model.layers.0.self_attn.q_proj.weight": np.array([[1.0, 0.0], [2.0, 3.0]]),
        "model.layers.0.mlp.down_proj.weight": np.array([[0.0, 4.0], [0.0, 5.0]]),
    }
    ours = {
        "model.layers.0.self_attn.q_proj.weight": np.array([[1.5, 7.0], [0.0, 3.0]]),  # 2 of 3
        "model.layers.0.mlp.down_proj.weight": np.array([[9.0, 4.0], [0.0, 5.0]]),  # 2 of 2
    }
    share = protocol.kept_overlap(ours, theirs)
    assert share["mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert share["min"] == pytest.approx(2 / 3) and share["linears"] == 2
    assert share["by_projection"] == pytest.approx({"down_proj": 1.0, "q_proj": 2 / 3})
    assert share["per_linear"]["model.layers.0.mlp.down_proj.weight"] == 1.0


def test_torch_and_jaxprune_linears_name_and_lay_out_the_same_weights():
    from tiny_checkpoint import CONFIG, tiny_tokenizer

    from jaxprune.models import LanguageModel
    from jaxprune.models.loaders import Pretrained

    model = LanguageModel(CONFIG)
    pre = Pretrained(model, model.init_params(0), tiny_tokenizer(), "tiny")
    ours = protocol.jaxprune_linears(pre, pre.params)
    theirs = protocol.torch_linears(protocol.TorchModel(pre, None).load())
    assert len(theirs) == 7 * CONFIG.num_hidden_layers
    for name, weight in theirs.items():
        np.testing.assert_allclose(ours[name], weight, rtol=1e-6)
    assert protocol.kept_overlap(ours, theirs)["min"] == 1.0


def test_tensor_to_rewritten_rewrites_device_and_dtype_arguments_then_restores_to():
    to = torch.Tensor.to
    x = torch.ones(2, dtype=torch.float32)
    keep32 = lambda a: torch.float32 if a is torch.float16 else a  # noqa: E731
    with protocol.tensor_to_rewritten(keep32):
        assert x.to(torch.float16).dtype == torch.float32
        assert x.to(dtype=torch.float16).dtype == torch.float32
        assert x.to("cpu", torch.float16).dtype == torch.float32
        assert x.to(torch.float64).dtype == torch.float64  # other arguments pass unchanged
    assert torch.Tensor.to is to and x.to(torch.float16).dtype == torch.float16
    with pytest.raises(RuntimeError), protocol.tensor_to_rewritten(keep32):
        raise RuntimeError  # restored on error too
    assert torch.Tensor.to is to


def test_float16_casts_keep_float32_inside_the_block_only():
    x = torch.ones(2, dtype=torch.float32)
    with protocol.float16_casts_kept_float32():
        halved = x.half()
        assert halved.dtype == torch.float32 and halved.data_ptr() != x.data_ptr()  # a copy
        assert x.to(dtype=torch.float16).dtype == torch.float32
        assert x.type(torch.half).dtype == torch.float32
        assert x.type(torch.float64).dtype == torch.float64 and x.type() == "torch.FloatTensor"
    assert x.half().dtype == torch.float16 and x.type(torch.half).dtype == torch.float16


def test_loader_batches_are_one_int64_row_per_window_without_targets():
    calib = np.arange(12, dtype=np.int32).reshape(3, 4)
    batches = protocol.loader_batches(calib)
    assert len(batches) == 3 and all(target is None for _, target in batches)
    assert all(ids.dtype == torch.int64 and ids.shape == (1, 4) for ids, _ in batches)
    np.testing.assert_array_equal(torch.cat([ids for ids, _ in batches]).numpy(), calib)


def test_write_measurement_records_what_the_args_as_text_and_the_sections(tmp_path):
    import argparse
    import json

    out = tmp_path / "measure.json"
    args = argparse.Namespace(out=out, blocks=[2, 11], alpha=0.5)
    protocol.write_measurement(str(out), "diagonal spread", args, rows=[{"block": 2}])
    written = json.loads(out.read_text())
    assert written["what"] == "diagonal spread"
    assert written["args"] == {"out": str(out), "blocks": "[2, 11]", "alpha": "0.5"}
    assert written["rows"] == [{"block": 2}] and "environment" in written
