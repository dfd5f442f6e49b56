"""The NNX ViT equals transformers' PyTorch ViT, DeiT and DINOv2 on the same safetensors weights."""

import numpy as np
import pytest
import torch
import transformers

from jaxprune.models.loaders.vit import load_vit
from jaxprune.models.vit import ViTConfig, ViTModel, bicubic_matrix

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    patch_size=4,
    num_channels=3,
)


def _save(tmp_path, model):
    model.eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    return tmp_path


def _images(n, size, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [("vit", 1), ("deit", 2), ("dinov2", 1)],
)
def test_backbone_tokens_match_transformers(tmp_path, kind, prefix):
    torch.manual_seed(0)
    if kind == "vit":
        hf = transformers.ViTModel(
            transformers.ViTConfig(image_size=16, **TINY), add_pooling_layer=False
        )
    elif kind == "deit":
        hf = transformers.DeiTModel(
            transformers.DeiTConfig(image_size=16, **TINY), add_pooling_layer=False
        )
    else:
        cfg = {k: v for k, v in TINY.items() if k != "intermediate_size"}
        hf = transformers.Dinov2Model(transformers.Dinov2Config(image_size=24, mlp_ratio=2, **cfg))
        # LayerScale starts at 1.0 in a fresh model; random values make the check meaningful.
        with torch.no_grad():
            for layer in hf.encoder.layer:
                layer.layer_scale1.lambda1.uniform_(0.1, 1.0)
                layer.layer_scale2.lambda1.uniform_(0.1, 1.0)
    loaded = load_vit(_save(tmp_path, hf), image_size=16)
    assert loaded.model.config.num_prefix_tokens == prefix
    x = _images(3, 16)
    with torch.no_grad():
        ref = hf(torch.from_numpy(x)).last_hidden_state.numpy()
    out = np.asarray(loaded.model.tokens(loaded.params, x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)


def test_dinov2_position_embeddings_are_resized_like_transformers(tmp_path):
    # Trained on a 6x6 grid, applied to 4x4: the bicubic resize must match torch's interpolate.
    torch.manual_seed(1)
    cfg = {k: v for k, v in TINY.items() if k != "intermediate_size"}
    hf = transformers.Dinov2Model(transformers.Dinov2Config(image_size=24, **cfg))
    loaded = load_vit(_save(tmp_path, hf), image_size=16)
    assert loaded.model.config.position_grid == 6 and loaded.model.config.grid == 4
    x = _images(2, 16, seed=3)
    with torch.no_grad():
        ref = hf(torch.from_numpy(x)).last_hidden_state.numpy()
    out = np.asarray(loaded.model.tokens(loaded.params, x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)


def test_vit_classifier_logits_match_transformers(tmp_path):
    torch.manual_seed(2)
    hf = transformers.ViTForImageClassification(
        transformers.ViTConfig(image_size=16, num_labels=5, **TINY)
    )
    loaded = load_vit(_save(tmp_path, hf))
    x = _images(2, 16, seed=4)
    with torch.no_grad():
        ref = hf(torch.from_numpy(x)).logits.numpy()
    out = np.asarray(loaded.model.logits(loaded.params, x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(("n_in", "n_out"), [(37, 16), (6, 4), (5, 9)])
def test_bicubic_matrix_matches_torch_interpolate(n_in, n_out):
    grid = np.random.default_rng(0).standard_normal((1, 2, n_in, n_in)).astype(np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(grid), size=(n_out, n_out), mode="bicubic", align_corners=False
    ).numpy()
    w = bicubic_matrix(n_in, n_out)
    np.testing.assert_allclose(np.einsum("ij,cjk,lk->cil", w, grid[0], w), ref[0], atol=1e-5)


def test_wrong_image_size_is_a_clear_error():
    model = ViTModel(ViTConfig(image_size=16, **TINY))
    with pytest.raises(ValueError, match="image_size=8"):
        model.tokens(model.init_params(), np.zeros((1, 8, 8, 3), np.float32))


def test_unknown_source_names_the_accepted_forms(tmp_path):
    with pytest.raises(ValueError, match="embedded name"):
        load_vit(tmp_path / "nothing")
