"""compressed-tensors export: the compressed-tensors package decompresses it to our weights."""

from __future__ import annotations

import json

import jax
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file
from tiny_models import TINY_LLAMA_8WAY

from jaxprune.core.paths import get_leaf, select_paths, set_leaves
from jaxprune.models import LanguageModel
from jaxprune.models.export import export_hf
from jaxprune.models.export_compressed import export_compressed, two_four_tensors

# 0.15 dropped the sparse compressors: see the "compressed" extra in pyproject.toml
pytest.importorskip("compressed_tensors.compressors.sparse_compressors")
import torch  # noqa: E402
from compressed_tensors.compressors import ModelCompressor  # noqa: E402

MODEL = LanguageModel(TINY_LLAMA_8WAY)
LINEARS = r"layers/\d+/(self_attn|mlp)/\w+_proj/kernel"


def sparse_params(pattern: str):
    """Random params with every decoder linear 50% unstructured or 2:4 (along the input axis)."""
    params = MODEL.init_params(0)
    rng = np.random.default_rng(1)
    leaves = {}
    for path in select_paths(params, LINEARS):
        kernel = np.asarray(get_leaf(params, path))  # (in, out)
        if pattern == "2:4":
            order = rng.random((kernel.shape[0] // 4, 4, kernel.shape[1])).argsort(1)
            keep = (order < 2).reshape(kernel.shape)
        else:
            keep = rng.random(kernel.shape) < 0.5
        leaves[path] = kernel * keep
    return set_leaves(params, leaves)


def as_numpy(tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: the same bits, as ml_dtypes'
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def decompressed(directory):
    compressor = ModelCompressor.from_pretrained(str(directory))
    return {k: as_numpy(v) for k, v in compressor.sparsity_compressor.decompress(str(directory))}


@pytest.mark.parametrize(
    ("pattern", "fmt"), [("unstructured", "sparse-bitmask"), ("2:4", "sparse-24-bitmask")]
)
def test_compressed_tensors_decompresses_to_our_weights_bit_for_bit(tmp_path, pattern, fmt):
    params = sparse_params(pattern)
    dense = export_hf(tmp_path / "dense", MODEL, params)
    summary = export_compressed(tmp_path / "ct", MODEL, params)
    assert summary["format"] == fmt
    config = json.loads((tmp_path / "ct" / "config.json").read_text())
    assert config["quantization_config"]["sparsity_config"]["format"] == fmt
    ours = load_file(str(tmp_path / "dense" / "model.safetensors"))
    theirs = decompressed(tmp_path / "ct")
    assert set(theirs) == set(ours)
    for name, value in ours.items():
        assert theirs[name].dtype == value.dtype and theirs[name].shape == value.shape, name
        np.testing.assert_array_equal(theirs[name], value, err_msg=name)
    # 50% zeros: the linears take about half (bitmask) or half plus 1/32 (2:4) of their bytes
    linear_bytes = sum(v.nbytes for k, v in ours.items() if ".layers." in k and "proj" in k)
    saved = dense["bytes"] - summary["bytes"]
    assert 0.4 * linear_bytes < saved < 0.5 * linear_bytes


def test_groups_with_fewer_than_two_nonzeros_store_zeros_in_the_free_slots():
    weight = np.array([[0.0, 0.0, 0.0, 3.0, 1.0, 0.0, 2.0, 0.0]], np.float32)
    parts = two_four_tensors("w", weight)
    np.testing.assert_array_equal(parts["w.compressed"], [[0.0, 3.0, 1.0, 2.0]])
    from compressed_tensors.compressors.sparse_compressors.sparse_24_bitmask import (
        sparse24_bitmask_decompress,
    )

    back = sparse24_bitmask_decompress(
        torch.from_numpy(parts["w.compressed"]), torch.from_numpy(parts["w.bitmask"]), [1, 8]
    )
    np.testing.assert_array_equal(back.numpy(), weight)


def test_bfloat16_weights_survive_the_round_trip(tmp_path):
    params = jax.tree.map(lambda x: x.astype("bfloat16"), sparse_params("unstructured"))
    export_compressed(tmp_path / "ct", MODEL, params)
    ours = export_hf(tmp_path / "dense", MODEL, params)
    assert ours["config"]["torch_dtype"] == "bfloat16"
    theirs = decompressed(tmp_path / "ct")
    for name, value in load_file(str(tmp_path / "dense" / "model.safetensors")).items():
        assert theirs[name].dtype == value.dtype
        # bit for bit, except that a pruned -0.0 comes back as +0.0 (x + 0.0 makes that change)
        signless = (value.astype(np.float32) + 0.0).astype(value.dtype)
        np.testing.assert_array_equal(theirs[name].view(np.uint16), signless.view(np.uint16))


def test_a_dense_model_and_a_wrong_2_4_claim_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no zero weights.*format='hf'"):
        export_compressed(tmp_path / "a", MODEL, MODEL.init_params(0))
    with pytest.raises(ValueError, match="is not 2:4 sparse"):
        export_compressed(
            tmp_path / "b", MODEL, sparse_params("unstructured"), sparse_format="sparse-24-bitmask"
        )
    assert not any(tmp_path.iterdir())  # nothing half-written
